"""Utility cost of the default privacy settings: the leaderboard value against the exact pooled one.

For each data set, a model is trained on public rows and scored on the test rows spread over the
sites as the owner would hold them. Each repeat does what the sites and the hub do for one
submission: every site computes its sufficient statistics and adds the Gaussian noise of one
release (`evaluator.privacy.mechanism.gaussian_release`), the hub pools the noised statistics and
computes the metrics (`metrics_from_statistics`). Reported: the exact pooled value (the same
statistics without noise, equal to the centralized metric of clipped/binned inputs), the mean
absolute error of the released value over the repeats, and its 95th percentile. Also the old,
per-site weighted average of exact metrics, to show what pooling fixes.

    python benchmarks/disclosure_utility.py --repeats 200 [--epsilon 1.0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator.privacy.mechanism import gaussian_release, noise_scales  # noqa: E402
from evaluator.privacy.statistics import (  # noqa: E402
    ReleaseSpec,
    metrics_from_statistics,
    pool,
    sufficient_statistics,
)
from evaluator.privacy.zcdp import rho_for_epsilon  # noqa: E402

DELTA = 1e-6


def demo_task(seed: int = 0):
    """The demo's data: breast cancer, 3 sites (as `.ci/demo/prepare_sites.py` splits it)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, random_state=seed, stratify=y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    sites = np.array_split(np.random.default_rng(seed).permutation(len(y_test)), 3)
    metrics = ["roc_auc", "accuracy", "log_loss"]
    spec = ReleaseSpec.for_task(task_type="binary_classification", metric_names=metrics, input_spec={})
    return "demo (breast cancer, 3 sites)", spec, y_test, model.predict_proba(x_test), sites


def mnist1d_task(seed: int = 0):
    """MNIST-1D: 1,000 test rows over 4 label-skewed sites, an MLP trained on the rest."""
    from mnist1d.data import get_dataset_args, make_dataset
    from sklearn.neural_network import MLPClassifier

    args = get_dataset_args()
    data = make_dataset(args)
    x_train, y_train = data["x"], data["y"]
    x_test, y_test = data["x_test"][:1000], data["y_test"][:1000]
    model = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=300, random_state=seed).fit(
        x_train, y_train
    )
    order = np.argsort(y_test, kind="stable")  # label-skewed sites, as in the measurement
    sites = np.array_split(order, 4)
    metrics = ["accuracy", "f1", "balanced_accuracy", "roc_auc", "log_loss"]
    spec = ReleaseSpec.for_task(
        task_type="multiclass_classification", metric_names=metrics, input_spec={"n_classes": 10}
    )
    return "MNIST-1D (1,000 rows, 4 label-skewed sites)", spec, y_test, model.predict_proba(x_test), sites


def weighted_per_site(spec, y, proba, sites) -> dict[str, float]:
    """The old aggregation: each site's exact metric, averaged weighted by rows."""
    from evaluator.metrics import compute_metrics

    values, weights = [], []
    for rows in sites:
        try:
            values.append(
                compute_metrics(
                    spec.task_type, spec.metric_names, y[rows], proba[rows], n_classes=spec.n_classes
                )
            )
            weights.append(len(rows))
        except ValueError:
            return {}  # a metric undefined at one site failed the whole submission
    total = sum(weights)
    return {m: sum(v[m] * w for v, w in zip(values, weights, strict=True)) / total for m in spec.metric_names}


def measure(name, spec, y, proba, sites, *, epsilon: float, repeats: int) -> dict:
    rho = rho_for_epsilon(epsilon, DELTA)
    exact_per_site = [sufficient_statistics(spec, y[rows], proba[rows]) for rows in sites]
    n = len(y)
    exact = metrics_from_statistics(spec, pool(spec, exact_per_site), n)
    rng = np.random.default_rng(12345)
    errors: dict[str, list[float]] = {m: [] for m in spec.metric_names}
    for _ in range(repeats):
        noised = [
            {b: np.asarray(v) for b, v in gaussian_release(spec, s, rho=rho, rng=rng).items()}
            for s in exact_per_site
        ]
        released = metrics_from_statistics(spec, pool(spec, noised), n)
        for m in spec.metric_names:
            if m in released and m in exact:
                errors[m].append(abs(released[m] - exact[m]))
    return {
        "task": name,
        "epsilon": epsilon,
        "delta": DELTA,
        "rho": rho,
        "noise_std": noise_scales(spec, rho),
        "rows": n,
        "sites": len(sites),
        "per_site_weighted": weighted_per_site(spec, y, proba, sites),
        "metrics": {
            m: {
                "exact_pooled": exact.get(m),
                "mae": float(np.mean(errors[m])) if errors[m] else None,
                "p95": float(np.percentile(errors[m], 95)) if errors[m] else None,
            }
            for m in spec.metric_names
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--epsilon", type=float, nargs="+", default=[1.0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    for task in (demo_task(), mnist1d_task()):
        for epsilon in args.epsilon:
            results.append(measure(*task, epsilon=epsilon, repeats=args.repeats))
    for r in results:
        print(
            f"\n### {r['task']}, epsilon {r['epsilon']} per release (delta {r['delta']:g}), {args.repeats} repeats\n"
        )
        print("| metric | exact pooled | old per-site weighted | MAE of released | p95 error |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for m, v in r["metrics"].items():
            old = r["per_site_weighted"].get(m)
            old_text = f"{old:.4f}" if old is not None else "failed (undefined at a site)"
            print(f"| {m} | {v['exact_pooled']:.4f} | {old_text} | {v['mae']:.4f} | {v['p95']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
