"""Federated 1-D CNN on MNIST-1D over 4 non-IID sites: Vaultbench vs Flower vs centralized.

    FLWR_TELEMETRY_ENABLED=0 python benchmarks/federated_mnist1d.py [--rounds 20] [--json out.json]

Data: ``mnist1d.data.make_dataset(get_dataset_args())`` (generated offline; 4,000 training rows,
1,000 test rows, 40 features, 10 classes). Non-IID split of the training rows over 4 sites by
label groups {0,1,2}, {3,4,5}, {6,7}, {8,9}: for every label, the first 85 % of its rows (in the
data's order) go to the site of its group, the other 15 % are cut in three equal parts for the
three other sites (~20 rows of each foreign label per site). Each site trains on its rows minus
Vaultbench's seeded 20 % validation holdout. The sites' test splits (for the hub's own scoring
of the parent and of the fine-tuned entries) are the test rows cut in 4 in order; accuracy in
the tables is on all 1,000 test rows, computed here.

Model: ``CNN1D`` of docs/examples/make_mnist1d_torchscript.py (conv 1->16 k5, conv 16->16 k3 s2,
linear 320->10; 4,106 trainable parameters), fresh seeded init, TorchScript. FedAvg weighted by
each site's training rows (as Vaultbench does by default), 1 local epoch, batch 32, SGD lr 0.2, ``--rounds`` rounds. Centralized: the union
of the sites' training rows, ``--rounds`` epochs, same batch size and lr.

Vaultbench, three runs on the same task (the owner changes the task's ``fl_*`` fields between
them): secure aggregation on (threshold 3 of 4, 20-bit quantization), off, and on with DP
(clip norm C, noise multiplier z chosen with ``evaluator.federated.accounting`` so that the
rounds land at epsilon 8 at delta 1e-5 in the sites' worst-case accounting). Without DP the
clip norm is 10 (above every update norm seen: never binding).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import federated_common as fc  # noqa: E402

GROUPS = ([0, 1, 2], [3, 4, 5], [6, 7], [8, 9])
HOME_SHARE = 0.85
SEED_BASE = 23
N_SITES = 4


def build_data():
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64)
    x_test, y_test = data["x_test"].astype(np.float32), data["y_test"].astype(np.int64)
    home = {label: i for i, group in enumerate(GROUPS) for label in group}
    assign = np.empty(len(y), dtype=int)
    for label in range(10):
        idx = np.flatnonzero(y == label)
        k = int(round(HOME_SHARE * len(idx)))
        assign[idx[:k]] = home[label]
        others = [s for s in range(N_SITES) if s != home[label]]
        for s, chunk in zip(others, np.array_split(idx[k:], len(others)), strict=True):
            assign[chunk] = s
    sites_all = [(x[assign == s], y[assign == s]) for s in range(N_SITES)]
    return x, y, x_test, y_test, sites_all


def build_model(path: Path, x: np.ndarray) -> None:
    import torch
    from make_mnist1d_torchscript import CNN1D

    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(CNN1D(float(x.mean()), float(x.std()))), str(path))


def dp_noise_multiplier(rounds: int, epsilon: float, delta: float, n_sites: int) -> float:
    """z such that ``rounds`` rounds cost ``epsilon`` in the sites' worst case (threshold t of n)."""
    from evaluator.federated.accounting import effective_noise_multiplier, epsilon_after
    from evaluator.federated.secagg import default_threshold

    t = default_threshold(n_sites)
    lo, hi = 0.05, 100.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if epsilon_after(rounds, effective_noise_multiplier(mid, n_sites, t), 1.0, delta) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dp-epsilon", type=float, default=8.0)
    parser.add_argument("--dp-clip", type=float, default=1.0)
    parser.add_argument(
        "--poll", type=float, default=0.5, help="agents' run poll interval (Agent default 0.5)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--skip-flower", action="store_true")
    args = parser.parse_args()
    rounds = args.rounds
    cfg = {"local_epochs": 1, "batch_size": args.batch_size, "learning_rate": args.lr}
    z = dp_noise_multiplier(rounds, args.dp_epsilon, 1e-5, N_SITES)

    x, _, x_test, y_test, sites_all = build_data()
    sites_train = [(sx[fc.fit_rows(len(sy))], sy[fc.fit_rows(len(sy))]) for sx, sy in sites_all]
    test = (x_test, y_test)
    results: dict = {"config": {**cfg, "rounds": rounds, "poll_seconds": args.poll, "dp_epsilon": args.dp_epsilon,
                                "dp_clip": args.dp_clip, "dp_noise_multiplier": z,
                                "site_rows": [len(s[1]) for s in sites_train],
                                "site_label_counts": [np.bincount(s[1], minlength=10).tolist() for s in sites_train]}}  # fmt: skip

    with fc.VaultbenchHub(N_SITES, poll_seconds=args.poll, keep=args.keep) as hub:
        model = hub.root / "cnn1d.pt"
        build_model(model, x)
        trainer = fc.load_trainer(model)
        w0 = trainer.get_weights()
        n_params = sum(v.size for v in w0.values())
        results["config"]["n_params"] = n_params

        union = (np.concatenate([s[0] for s in sites_train]), np.concatenate([s[1] for s in sites_train]))
        results["centralized"] = fc.centralized(
            model, *union, epochs=rounds, cfg=cfg, test=test, seed_base=SEED_BASE
        )
        results["plain"] = fc.plain_fedavg(
            model, sites_train, rounds=rounds, cfg=cfg, test=test, seed_base=SEED_BASE, example_weighted=True
        )
        print(f"centralized {results['centralized']['curve'][-1]:.4f}, plain FedAvg "
              f"{results['plain']['curve'][-1]:.4f}", file=sys.stderr)  # fmt: skip
        if not args.skip_flower:
            results["flower"] = fc.run_flower(model, sites_train, rounds=rounds, cfg=cfg, test=test,
                                              seed_base=SEED_BASE, work=hub.root, example_weighted=True)  # fmt: skip
            print(f"flower {results['flower']['curve'][-1]:.4f}", file=sys.stderr)

        spec_in = {"n_features": 40, "n_classes": 10, "task_type": "multiclass_classification"}
        task_id = hub.create_task({
            "title": "MNIST-1D (federated benchmark)", "description": "1-D CNN, 4 non-IID sites.",
            "task_type": "multiclass_classification",
            "input_spec": {"n_features": 40, "dtype": "float32", "n_classes": 10},
            "metrics": [{"name": "accuracy", "decimals": 4}], "primary_metric": "accuracy",
            "min_test_rows": 10, "quota_per_day": 1000,
            "resource_limits": {"memory_mb": 2048, "cpus": 1.0, "timeout_seconds": 900, "max_output_mb": 64},
            "fine_tuning_allowed": True,
        })  # fmt: skip
        test_parts = np.array_split(np.arange(len(y_test)), N_SITES)
        for i, (sx, sy) in enumerate(sites_all):
            hub.register_site_data(
                i, task_id, spec_in, (x_test[test_parts[i]], y_test[test_parts[i]]), (sx, sy)
            )
        hub.start_agents()
        parent_id = hub.upload(task_id, model, "cnn1d")
        hub.wait_scored(parent_id)
        results["parent_site_test_accuracy"] = hub.site_accuracy(parent_id)
        results["parent_test_accuracy"] = fc.accuracy(trainer, w0, *test)

        variants = {
            "vaultbench_secagg": dict(fl_secure_aggregation=True, fl_clip_norm=10.0, fl_noise_multiplier=0.0),
            "vaultbench_no_secagg": dict(fl_secure_aggregation=False, fl_clip_norm=10.0, fl_noise_multiplier=0.0,
                                         fl_robust_rule="mean"),
            "vaultbench_secagg_dp": dict(fl_secure_aggregation=True, fl_clip_norm=args.dp_clip, fl_noise_multiplier=z),
        }  # fmt: skip
        for name, policy in variants.items():
            hub.set_fl_policy(
                task_id, fl_dp_delta=1e-5, fl_epsilon_cap=None, fl_quantization_bits=20, **policy
            )
            try:
                out = hub.finetune(parent_id, rounds=rounds, learning_rate=args.lr, local_epochs=1,
                                   batch_size=args.batch_size)  # fmt: skip
            except (RuntimeError, TimeoutError) as exc:  # recorded; the other variants still run
                results[f"{name}_error"] = str(exc)
                print(f"{name}: {exc}", file=sys.stderr)
                continue
            layout = out["layout"]
            offsets = hub.offsets_by_round(layout)
            offsets[rounds] = out["final_offset"]
            curve = [fc.accuracy(trainer, fc.add_offset(w0, offsets[r], layout), *test) if r in offsets else None
                     for r in range(1, rounds + 1)]  # fmt: skip
            analysis = fc.analyse_run(hub, out)
            jobs = {str(p.job_id) for p in out["run"].participants.all()}
            analysis.update(curve=curve, bytes=fc.bytes_summary(analysis), site_epsilons=hub.site_epsilons(jobs),
                            site_test_accuracy=hub.site_accuracy(out["child_id"]))  # fmt: skip
            results[name] = analysis
            print(
                f"{name}: accuracy {curve[-1]:.4f}, {analysis['median_round_seconds']:.2f} s/round",
                file=sys.stderr,
            )
    results["machine"] = fc.machine()
    results["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    print(report(results))
    fc.write_json(args.json, results)


def report(results: dict) -> str:
    cfg = results["config"]
    r = cfg["rounds"]
    pbytes = cfg["n_params"] * 4
    lines = [f"Accuracy on the 1,000 test rows after {r} rounds (centralized: {r} epochs); parent (fresh init) "
             f"{results['parent_test_accuracy']:.4f}:", "",
             "| system | accuracy | median wall per round | first round / startup | bytes up per site per round | "
             "bytes down per site per round |", "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    c = results["centralized"]
    lines.append(f"| centralized (union of the sites' rows) | {c['curve'][-1]:.4f} | "
                 f"{statistics.median(c['epoch_seconds']) * 1000:.0f} ms / epoch | – | – | – |")  # fmt: skip
    p = results["plain"]
    lines.append(f"| plain FedAvg loop (in process) | {p['curve'][-1]:.4f} | "
                 f"{statistics.median(p['round_seconds']) * 1000:.0f} ms | – | {fc.fmt_bytes(pbytes)} (in memory) | "
                 f"{fc.fmt_bytes(pbytes)} (in memory) |")  # fmt: skip
    f = results.get("flower")
    if f:
        lines.append(
            f"| Flower 1.41 simulation (Ray) | {f['curve'][-1]:.4f} | {statistics.median(f['round_seconds'][1:]) * 1000:.0f} ms | "
            f"{f['round_seconds'][0]:.1f} s (total run {f['total_seconds']:.1f} s) | {fc.fmt_bytes(f['parameter_bytes'])} "
            f"(ArrayRecord) | {fc.fmt_bytes(f['parameter_bytes'])} (ArrayRecord) |"
        )
    labels = {"vaultbench_secagg": "Vaultbench, secure aggregation", "vaultbench_no_secagg": "Vaultbench, no secure aggregation",
              "vaultbench_secagg_dp": f"Vaultbench, secure aggregation + DP (z={cfg['dp_noise_multiplier']:.3f}, C={cfg['dp_clip']:g})"}  # fmt: skip
    for key, label in labels.items():
        v = results.get(key)
        if not v:
            continue
        b = v["bytes"]
        lines.append(
            f"| {label} | {v['curve'][-1]:.4f} | {v['median_round_seconds']:.2f} s | {v['setup_seconds']:.1f} s "
            f"(total run {v['total_seconds']:.1f} s) | {fc.fmt_bytes(b['protocol_up'])} (+ {fc.fmt_bytes(b['polling_up'])} polls) | "
            f"{fc.fmt_bytes(b['protocol_down'])} (+ {fc.fmt_bytes(b['polling_down'])} polls) |"
        )
    show = [k for k in (1, 2, 5, 10, 15, 20, 30, 40, 50) if k <= r]
    if r not in show:
        show.append(r)
    lines += ["", "Accuracy after round k:", "", "| system | " + " | ".join(str(k) for k in show) + " |",
              "| --- |" + " ---: |" * len(show)]  # fmt: skip
    for key, label in [("centralized", "centralized (epoch k)"), ("plain", "plain FedAvg"), ("flower", "Flower"),
                       *labels.items()]:  # fmt: skip
        curve = results.get(key, {}).get("curve")
        if curve:
            lines.append(
                f"| {label} | "
                + " | ".join("–" if curve[k - 1] is None else f"{curve[k - 1]:.4f}" for k in show)
                + " |"
            )
    dp = results.get("vaultbench_secagg_dp")
    if dp:
        eps = [e for e in dp["site_epsilons"] if e is not None]
        lines += ["", f"DP run: epsilon after {r} rounds at delta 1e-5: sites' ledgers (worst case, threshold "
                      f"{dp['threshold']} of 4) {max(eps) if eps else float('nan'):.3f}; hub (all 4 contributed) "
                      f"{dp['epsilon_hub']:.3f}."]  # fmt: skip
    lines += ["", "Vaultbench, where a round's time goes:", ""]
    lines += fc.where_time_goes_table(
        {labels[k].replace("Vaultbench, ", ""): results[k] for k in labels if k in results}
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
