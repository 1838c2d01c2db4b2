"""Federated logistic regression on breast cancer: Vaultbench vs Flower vs a plain FedAvg loop.

    FLWR_TELEMETRY_ENABLED=0 python benchmarks/federated_breast_cancer.py [--rounds 20,50] [--json out.json]

Data: scikit-learn's breast-cancer rows in their given order; training rows 0-151, 151-302 and
302-455 are the three sites' train splits, rows 455-569 the test rows (accuracy after each round
is measured on them). Features are standardized with the mean and std of rows 0-455. Each site
trains on its train split minus Vaultbench's seeded 20 % validation holdout (121, 121, 122 rows),
in the same order, for all three systems.

Model: a torch ``nn.Linear(30, 2)`` + softmax (logistic regression), TorchScript, one seeded
init. FedAvg with equal site weights, 1 local epoch, SGD at ``--lr``, batch ``--batch-size``
(default 128: one full batch per site and epoch, so the sandbox's secret per-round shuffle seed
cannot change the result). Vaultbench runs with secure aggregation (threshold 2 of 3, 20-bit
quantization), no DP noise, clip norm 1.0 (10x the largest update norm seen: never binding).

Vaultbench's per-round accuracy: the offsets ``D_r`` the first site downloads each round and the
final ``D_R`` of the fine-tuned submission, applied to the known ``w0`` and evaluated here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import federated_common as fc  # noqa: E402

BOUNDS = [(0, 151), (151, 302), (302, 455)]
TEST = (455, 569)
SEED_BASE = 11


def build_data():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = data.data.astype(np.float64)
    y = data.target.astype(np.int64)
    mean, std = x[: BOUNDS[-1][1]].mean(axis=0), x[: BOUNDS[-1][1]].std(axis=0)
    xs = ((x - mean) / std).astype(np.float32)
    return xs, y


def build_model(path: Path) -> None:
    import torch
    from torch import nn

    class LogisticRegression(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(30, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.linear(x), dim=1)

    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(LogisticRegression()), str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", default="20,50")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--poll", type=float, default=0.5, help="agents' run poll interval (Agent default 0.5)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--skip-flower", action="store_true")
    args = parser.parse_args()
    rounds_list = [int(r) for r in args.rounds.split(",")]
    cfg = {"local_epochs": 1, "batch_size": args.batch_size, "learning_rate": args.lr}

    x, y = build_data()
    sites_train, sites_all = [], []
    for a, b in BOUNDS:
        rows = fc.fit_rows(b - a)
        sites_train.append((x[a:b][rows], y[a:b][rows]))
        sites_all.append((x[a:b], y[a:b]))
    test = (x[TEST[0] : TEST[1]], y[TEST[0] : TEST[1]])
    results: dict = {"config": {**cfg, "rounds": rounds_list, "site_rows": [len(s[1]) for s in sites_train],
                                "test_rows": len(test[1]), "poll_seconds": args.poll}}  # fmt: skip

    with fc.VaultbenchHub(3, poll_seconds=args.poll, keep=args.keep) as hub:
        model = hub.root / "logreg.pt"
        build_model(model)
        trainer = fc.load_trainer(model)
        w0 = trainer.get_weights()

        # Plain loop and Flower first (the hub is idle: no agents yet).
        for rounds in rounds_list:
            plain = fc.plain_fedavg(
                model, sites_train, rounds=rounds, cfg=cfg, test=test, seed_base=SEED_BASE
            )
            results[f"plain_{rounds}"] = plain
            print(f"plain {rounds} rounds: final accuracy {plain['curve'][-1]:.4f}", file=sys.stderr)
            if not args.skip_flower:
                flower = fc.run_flower(model, sites_train, rounds=rounds, cfg=cfg, test=test, seed_base=SEED_BASE,
                                       work=hub.root)  # fmt: skip
                results[f"flower_{rounds}"] = flower
                print(f"flower {rounds} rounds: final accuracy {flower['curve'][-1]:.4f}", file=sys.stderr)

        # Vaultbench: the owner's task with its FL policy, data at 3 sites, the vendor's parent.
        spec_in = {"n_features": 30, "n_classes": 2, "task_type": "binary_classification"}
        task_id = hub.create_task({
            "title": "Breast cancer (federated benchmark)", "description": "Logistic regression, 3 sites.",
            "task_type": "binary_classification", "input_spec": {"n_features": 30, "dtype": "float32", "n_classes": 2},
            "metrics": [{"name": "accuracy", "decimals": 4}, {"name": "roc_auc", "decimals": 4}],
            "primary_metric": "accuracy", "min_test_rows": 10, "quota_per_day": 1000,
            "resource_limits": {"memory_mb": 2048, "cpus": 1.0, "timeout_seconds": 900, "max_output_mb": 64},
            "fine_tuning_allowed": True,
        })  # fmt: skip
        hub.set_fl_policy(task_id, fl_secure_aggregation=True, fl_clip_norm=1.0, fl_noise_multiplier=0.0,
                          fl_dp_delta=1e-5, fl_epsilon_cap=None, fl_quantization_bits=20)  # fmt: skip
        test_parts = np.array_split(np.arange(TEST[0], TEST[1]), 3)
        for i, (fx, fy) in enumerate(sites_all):
            hub.register_site_data(i, task_id, spec_in, (x[test_parts[i]], y[test_parts[i]]), (fx, fy))
        hub.start_agents()
        parent_id = hub.upload(task_id, model, "logreg")
        hub.wait_scored(parent_id)
        for rounds in rounds_list:
            out = hub.finetune(parent_id, rounds=rounds, learning_rate=args.lr, local_epochs=1,
                               batch_size=args.batch_size)  # fmt: skip
            layout = out["layout"]
            offsets = hub.offsets_by_round(layout)
            offsets[rounds] = out["final_offset"]
            missing = [r for r in range(1, rounds + 1) if r not in offsets]
            curve = [fc.accuracy(trainer, fc.add_offset(w0, offsets[r], layout), *test) for r in range(1, rounds + 1)
                     if r in offsets]  # fmt: skip
            analysis = fc.analyse_run(hub, out)
            plain_offset = np.asarray(results[f"plain_{rounds}"]["offset"], dtype=np.float64)
            analysis.update(
                curve=curve, missing_rounds=missing,
                max_abs_offset_diff_vs_plain=float(np.max(np.abs(out["final_offset"] - plain_offset))),
                site_test_accuracy_parent=hub.site_accuracy(parent_id),
                site_test_accuracy_finetuned=hub.site_accuracy(out["child_id"]),
            )  # fmt: skip
            results[f"vaultbench_{rounds}"] = analysis
            print(f"vaultbench {rounds} rounds: final accuracy {curve[-1]:.4f}, "
                  f"{analysis['median_round_seconds']:.2f} s/round", file=sys.stderr)  # fmt: skip
    results["machine"] = fc.machine()
    results["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    print(report(results, rounds_list))
    fc.write_json(args.json, results)


def report(results: dict, rounds_list: list[int]) -> str:
    lines = []
    n_test = results["config"]["test_rows"]
    lines += ["Accuracy on the 114 test rows (one row = 0.88 points); max |difference| over all rounds:", ""]
    lines += ["| rounds | final: plain | final: Flower | final: Vaultbench | max diff Flower vs plain | "
              "max diff Vaultbench vs plain | max diff Vaultbench vs Flower | rounds where Vaultbench differs | "
              "max abs diff of final offset (Vaultbench vs plain) |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rounds_list:
        plain = results[f"plain_{r}"]["curve"]
        flower = results.get(f"flower_{r}", {}).get("curve")
        vb = results[f"vaultbench_{r}"]["curve"]

        def diff(a, b):
            return (
                "–" if a is None or b is None else f"{max(abs(p - q) for p, q in zip(a, b, strict=True)):.4f}"
            )

        differs = sum(1 for p, q in zip(vb, plain, strict=True) if abs(p - q) > 1e-12)
        lines.append(
            f"| {r} | {plain[-1]:.4f} | {flower[-1] if flower else float('nan'):.4f} | {vb[-1]:.4f} | "
            f"{diff(flower, plain)} | {diff(vb, plain)} | {diff(vb, flower)} | {differs} of {r} | "
            f"{results[f'vaultbench_{r}']['max_abs_offset_diff_vs_plain']:.2e} |"
        )
    r = max(rounds_list)
    show = [k for k in (1, 2, 3, 5, 10, 15, 20, 30, 40, 50) if k <= r]
    lines += ["", f"Accuracy after round k ({r}-round runs):", "",
              "| system | " + " | ".join(str(k) for k in show) + " |", "| --- |" + " ---: |" * len(show)]  # fmt: skip
    for name in ("plain", "flower", "vaultbench"):
        curve = results.get(f"{name}_{r}", {}).get("curve")
        if curve:
            lines.append(f"| {name} | " + " | ".join(f"{curve[k - 1]:.4f}" for k in show) + " |")
    lines += ["", "Wall time per round (median over rounds; Flower's first round, with the Ray actors' start, apart):", "",
              "| rounds | plain loop | Flower simulation | Flower round 1 | Flower total (incl. Ray start) | "
              "Vaultbench round | Vaultbench approve → round 0 | Vaultbench total (approve → completed) |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rounds_list:
        plain = results[f"plain_{r}"]
        flower = results.get(f"flower_{r}")
        vb = results[f"vaultbench_{r}"]
        fl = (f"{statistics.median(flower['round_seconds'][1:]) * 1000:.0f} ms | {flower['round_seconds'][0]:.1f} s | "
              f"{flower['total_seconds']:.1f} s") if flower else "– | – | –"  # fmt: skip
        lines.append(
            f"| {r} | {statistics.median(plain['round_seconds']) * 1000:.1f} ms | {fl} | "
            f"{vb['median_round_seconds']:.2f} s | {vb['setup_seconds']:.1f} s | {vb['total_seconds']:.1f} s |"
        )
    lines += ["", "Vaultbench, where a round's time goes:", ""]
    lines += fc.where_time_goes_table({f"{r} rounds": results[f"vaultbench_{r}"] for r in rounds_list})
    del n_test
    return "\n".join(lines)


if __name__ == "__main__":
    time.sleep(0)
    main()
