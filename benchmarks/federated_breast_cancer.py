"""Federated logistic regression on breast cancer, protocol A: Vaultbench vs Flower vs a plain loop.

    pip install -r benchmarks/requirements-flower.txt      # Flower for the comparison only
    FLWR_TELEMETRY_ENABLED=0 python benchmarks/federated_breast_cancer.py [--rounds 20] [--json out.json]

Protocol A, identical for the three systems:

- data: scikit-learn's breast-cancer rows in their given order; rows 0-151, 151-302 and 302-455
  are the three sites' train splits (every row trains: the run is approved without the
  validation holdout), rows 455-569 the test rows (accuracy after each round is measured on
  them); features standardized with the mean and std of rows 0-454;
- model: a torch ``nn.Linear(30, 2)`` + softmax (logistic regression), TorchScript, one seeded init;
  one local epoch per round, SGD at ``--lr``, batch ``--batch-size`` (default 256: one full batch
  per site and epoch, so the sandbox's secret per-round shuffle seed cannot change the result);
- server: FedAvg weighted by each site's examples (Flower: ``num-examples`` = the site's rows;
  Vaultbench: the sites release ``(n_k / cap) * update_k``, the hub divides the sum by
  ``sum(n_k) / cap``).

Vaultbench runs twice: with secure aggregation (threshold 2 of 3, 20-bit quantization) and
without; no DP (the owner's explicit ``none`` privacy unit), clip norm 10 (updates stay below 1.01: never binding).
Per-round accuracy: the offsets ``D_r`` the first site downloads each round and the final
``D_R`` of the fine-tuned submission, applied to the known ``w0`` and evaluated here.
After the parent is scored the benchmark asks each agent for a training sandbox started ahead
(``Agent.warm_training_sandbox``, what the agent does after evaluating a trainable model) and
waits until they are ready before each approval; ``--no-warm-after-eval``: every run's sandboxes
start cold unless the previous run's replacement is ready by then.
``VB_BENCH_SQLITE_WAL=1`` puts the hub's SQLite file in WAL mode (an experiment; the hub's
default is SQLite's rollback journal). Reported: the steady round time (median of rounds 2..R: round 1 pays Flower's Ray actors and
Vaultbench's first sandbox round), approve -> round 0 (Vaultbench: claim, artifact, sandbox
start, layout), and accuracy per round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import federated_common as fc  # noqa: E402

BOUNDS = [(0, 151), (151, 302), (302, 455)]
TEST = (455, 569)
SEED_BASE = 11
TASK_LIMITS = {"memory_mb": 2048, "cpus": 1.0, "timeout_seconds": 900, "max_output_mb": 64}


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
    parser.add_argument("--rounds", default="20")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--poll", type=float, default=0.5, help="agents' run poll interval (Agent default 0.5)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--skip-flower", action="store_true")
    parser.add_argument(
        "--no-warm-after-eval", action="store_true",
        help="do not start a training sandbox ahead after the parent is scored (the first run starts cold)",
    )  # fmt: skip
    args = parser.parse_args()
    rounds_list = [int(r) for r in args.rounds.split(",")]
    cfg = {"local_epochs": 1, "batch_size": args.batch_size, "learning_rate": args.lr}

    x, y = build_data()
    sites_all = [(x[a:b], y[a:b]) for a, b in BOUNDS]
    sites_train = sites_all  # protocol A: no validation holdout, every train row trains
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
                model, sites_train, rounds=rounds, cfg=cfg, test=test, seed_base=SEED_BASE, example_weighted=True
            )
            results[f"plain_{rounds}"] = plain
            print(f"plain {rounds} rounds: final accuracy {plain['curve'][-1]:.4f}", file=sys.stderr)
            if not args.skip_flower:
                flower = fc.run_flower(model, sites_train, rounds=rounds, cfg=cfg, test=test, seed_base=SEED_BASE,
                                       work=hub.root, example_weighted=True)  # fmt: skip
                results[f"flower_{rounds}"] = flower
                print(f"flower {rounds} rounds: final accuracy {flower['curve'][-1]:.4f}", file=sys.stderr)

        # Vaultbench: the owner's task with its FL policy, data at 3 sites, the vendor's parent.
        spec_in = {"n_features": 30, "n_classes": 2, "task_type": "binary_classification"}
        task_id = hub.create_task({
            "title": "Breast cancer (federated benchmark)", "description": "Logistic regression, 3 sites.",
            "task_type": "binary_classification", "input_spec": {"n_features": 30, "dtype": "float32", "n_classes": 2},
            "metrics": [{"name": "accuracy", "decimals": 4}, {"name": "roc_auc", "decimals": 4}],
            "primary_metric": "accuracy", "min_test_rows": 10, "quota_per_day": 1000,
            "resource_limits": TASK_LIMITS,
            "fine_tuning_allowed": True, "release_delay_seconds": 0,
        })  # fmt: skip
        hub.set_fl_policy(task_id, fl_privacy_unit="none", fl_secure_aggregation=True, fl_clip_norm=10.0, fl_noise_multiplier=0.0,
                          fl_dp_delta=1e-5, fl_epsilon_cap=None, fl_quantization_bits=20)  # fmt: skip
        test_parts = np.array_split(np.arange(TEST[0], TEST[1]), 3)
        for i, (fx, fy) in enumerate(sites_all):
            hub.register_site_data(i, task_id, spec_in, (x[test_parts[i]], y[test_parts[i]]), (fx, fy))
        hub.start_agents()
        parent_id = hub.upload(task_id, model, "logreg")
        hub.wait_scored(parent_id)
        for secure in (True, False):
            hub.set_fl_policy(task_id, fl_secure_aggregation=secure)
            for rounds in rounds_list:
                key = f"vaultbench{'' if secure else '_nosecagg'}_{rounds}"
                if not args.no_warm_after_eval:  # what the agent asks for after evaluating a trainable model
                    hub.warm_training_sandboxes(TASK_LIMITS)  # (and after each run): ready before the approval
                out = hub.finetune(parent_id, rounds=rounds, learning_rate=args.lr, local_epochs=1,
                                   batch_size=args.batch_size, validation_holdout=False)  # fmt: skip
                layout = out["layout"]
                offsets = hub.offsets_by_round(layout)
                offsets[rounds] = out["final_offset"]
                missing = [r for r in range(1, rounds + 1) if r not in offsets]
                curve = [fc.accuracy(trainer, fc.add_offset(w0, offsets[r], layout), *test)
                         for r in range(1, rounds + 1) if r in offsets]  # fmt: skip
                analysis = fc.analyse_run(hub, out)
                plain_offset = np.asarray(results[f"plain_{rounds}"]["offset"], dtype=np.float64)
                analysis.update(
                    curve=curve, missing_rounds=missing,
                    steady_round_seconds=statistics.median(analysis["round_seconds"][1:]),
                    max_abs_offset_diff_vs_plain=float(np.max(np.abs(out["final_offset"] - plain_offset))),
                    site_test_accuracy_finetuned=hub.site_accuracy(out["child_id"]),
                )  # fmt: skip
                results[key] = analysis
                print(f"{key}: final accuracy {curve[-1]:.4f}, steady round {analysis['steady_round_seconds']:.3f} s, "
                      f"approve -> round 0 {analysis['setup_seconds']:.2f} s", file=sys.stderr)  # fmt: skip
    results["machine"] = fc.machine()
    results["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    print(report(results, rounds_list))
    fc.write_json(args.json, results)


def report(results: dict, rounds_list: list[int]) -> str:
    systems = [("plain", "plain loop"), ("flower", "Flower 1.41"), ("vaultbench", "Vaultbench, secure aggregation"),
               ("vaultbench_nosecagg", "Vaultbench, no secure aggregation")]  # fmt: skip
    lines = []
    for r in rounds_list:
        plain = results[f"plain_{r}"]["curve"]
        flower = results.get(f"flower_{r}")
        lines += [f"Protocol A, {r} rounds ({results['machine'].get('cpu', '')}):", "",
                  "| system | steady round (median, rounds 2..R) | ratio to Flower | approve → round 0 | "
                  "final accuracy | rounds whose accuracy differs from the plain loop |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        flower_round = statistics.median(flower["round_seconds"][1:]) if flower else None
        for key, name in systems:
            data = results.get(f"{key}_{r}")
            if not data:
                continue
            if key == "plain":
                steady = statistics.median(data["round_seconds"][1:])
            elif key == "flower":
                steady = flower_round
            else:
                steady = data["steady_round_seconds"]
            setup = f"{data['setup_seconds']:.2f} s" if "setup_seconds" in data else "–"
            ratio = f"{steady / flower_round:.2f}×" if flower_round else "–"
            differs = sum(1 for p, q in zip(data["curve"], plain, strict=True) if abs(p - q) > 1e-12)
            lines.append(f"| {name} | {steady * 1000:.1f} ms | {ratio} | {setup} | {data['curve'][-1]:.4f} | "
                         f"{differs} of {r} |")  # fmt: skip
        show = [k for k in (1, 2, 3, 5, 10, 15, 20, 30, 40, 50) if k <= r]
        lines += ["", f"Accuracy after round k ({r}-round runs):", "",
                  "| system | " + " | ".join(str(k) for k in show) + " |", "| --- |" + " ---: |" * len(show)]  # fmt: skip
        for key, name in systems:
            curve = results.get(f"{key}_{r}", {}).get("curve")
            if curve:
                lines.append(f"| {name} | " + " | ".join(f"{curve[k - 1]:.4f}" for k in show) + " |")
        vb = {name: results[f"{key}_{r}"] for key, name in systems[2:] if f"{key}_{r}" in results}
        lines += ["", "Vaultbench, where a round's time goes:", ""]
        lines += fc.where_time_goes_table(vb)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
