"""The site's metrics equal scikit-learn's on many random cases and on the edge cases.

``evaluator.metrics`` computes its metrics with numpy on arrays it has already checked (no
re-validation per call); ``_sklearn_reference`` holds the ``sklearn.metrics`` call each one
stands for. Undefined cases must be undefined in both: scikit-learn raising ValueError or
returning NaN, and ours the same, so that ``compute_metrics`` refuses both alike.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from evaluator import metrics
from evaluator.metrics import CLASSIFICATION, REGISTRY, _sklearn_reference, compute_metrics

REFERENCE = _sklearn_reference()


def outcome(fn, *args, **kwargs):
    """The value, or "undefined" for ValueError / NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(fn(*args, **kwargs))
        except ValueError:
            return "undefined"
    return "undefined" if math.isnan(value) else value


def assert_same(name, y, pred, *, n_classes, sample_weight=None):
    ours = outcome(REGISTRY[name].fn, y, pred, n_classes=n_classes, sample_weight=sample_weight)
    theirs = outcome(REFERENCE[name], y, pred, n_classes=n_classes, sample_weight=sample_weight)
    if theirs == "undefined" or ours == "undefined":
        assert ours == theirs, (name, ours, theirs)
    else:
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12), name


def classification_case(rng, n, k, *, ties=False, weighted=False, skew=False):
    p = rng.dirichlet(np.ones(k) * (0.3 if skew else 1.0), size=n)
    if ties:  # coarse scores: many ties, as a quantized model gives
        p = np.round(p, 1)
        p[:, -1] = 1 - p[:, :-1].sum(axis=1)
        p = np.clip(p, 0, 1)
        p = p / p.sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=row) if rng.random() < 0.7 else rng.integers(k) for row in p], dtype=np.int64)
    w = rng.uniform(0.1, 3.0, size=n) if weighted else None
    return y, p, w


@pytest.mark.parametrize("seed", range(60))
def test_classification_metrics_equal_sklearn_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.choice([2, 2, 3, 5]))
    n = int(rng.choice([1, 2, 5, 30, 500]))
    y, p, w = classification_case(rng, n, k, ties=seed % 3 == 0, weighted=seed % 2 == 1, skew=seed % 5 == 0)
    labels = np.argmax(p, axis=1)
    for name, metric in REGISTRY.items():
        if metric.task_types != CLASSIFICATION:
            continue
        pred = p if metric.needs == "probabilities" else labels
        assert_same(name, y, pred, n_classes=k, sample_weight=w)


@pytest.mark.parametrize("seed", range(40))
def test_regression_metrics_equal_sklearn_on_random_cases(seed):
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.choice([1, 2, 3, 50, 1000]))
    y = rng.normal(size=n) * rng.uniform(0.1, 100)
    if seed % 4 == 0:
        y = np.round(y)  # integer targets
    v = y + rng.normal(size=n) * rng.uniform(0, 5)
    w = rng.uniform(0.1, 3.0, size=n) if seed % 2 else None
    for name in ("mean_squared_error", "mean_absolute_error", "r2"):
        assert_same(name, y, v, n_classes=None, sample_weight=w)


EDGE_CLASSIFICATION = {
    "one class present": (np.zeros(6, dtype=np.int64), np.tile([0.7, 0.3], (6, 1))),
    "all predictions one class": (np.array([0, 1, 1, 0, 1]), np.tile([0.2, 0.8], (5, 1))),
    "perfect": (np.array([0, 1, 1, 0]), np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])),
    "exactly wrong, saturated": (np.array([0, 1]), np.array([[0.0, 1.0], [1.0, 0.0]])),
    "all scores tied": (np.array([0, 1, 0, 1, 1]), np.tile([0.5, 0.5], (5, 1))),
    "single row": (np.array([1]), np.array([[0.4, 0.6]])),
}


@pytest.mark.parametrize("case", sorted(EDGE_CLASSIFICATION))
def test_binary_edge_cases_match_sklearn(case):
    y, p = EDGE_CLASSIFICATION[case]
    for name in ("accuracy", "balanced_accuracy", "roc_auc", "f1", "log_loss"):
        pred = p if REGISTRY[name].needs == "probabilities" else np.argmax(p, axis=1)
        assert_same(name, y, pred, n_classes=2)
        assert_same(name, y, pred, n_classes=2, sample_weight=np.linspace(0.5, 2, len(y)))


def test_multiclass_edge_cases_match_sklearn():
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.ones(4), size=20)
    y_missing = np.array([0, 1, 2] * 6 + [0, 1])  # class 3 never true
    y_full = np.array([0, 1, 2, 3] * 5)
    never_predicted = np.zeros(20, dtype=np.int64)
    for y in (y_missing, y_full):
        for name in ("accuracy", "balanced_accuracy", "roc_auc", "f1", "log_loss"):
            pred = p if REGISTRY[name].needs == "probabilities" else np.argmax(p, axis=1)
            assert_same(name, y, pred, n_classes=4)
        for name in ("accuracy", "balanced_accuracy", "f1"):
            assert_same(name, y, never_predicted, n_classes=4)


def test_regression_edge_cases_match_sklearn():
    for y, v in [
        (np.full(5, 3.0), np.full(5, 3.0)),  # constant and exact: r2 = 1
        (np.full(5, 3.0), np.arange(5.0)),  # constant target, wrong: r2 = 0
        (np.array([1.0]), np.array([2.0])),  # one sample: r2 undefined
        (np.array([1.0, -1.0]), np.array([-1.0, 1.0])),
    ]:
        for name in ("mean_squared_error", "mean_absolute_error", "r2"):
            assert_same(name, y, v, n_classes=None)


def test_compute_metrics_refuses_what_sklearn_cannot_define():
    y = np.zeros(5, dtype=np.int64)
    with pytest.raises(ValueError):
        compute_metrics("binary_classification", ["roc_auc"], y, np.tile([0.6, 0.4], (5, 1)))


def test_a_million_rows_take_a_fraction_of_sklearns_time():
    """Not a timed test of the machine: a ratio in the same process, generous."""
    import time

    rng = np.random.default_rng(0)
    n = 300_000
    p = rng.dirichlet(np.ones(2), size=n)
    y = (rng.random(n) < p[:, 1]).astype(np.int64)

    def clock(fn):
        start = time.perf_counter()
        for name in ("roc_auc", "log_loss", "accuracy"):
            pred = p if REGISTRY[name].needs == "probabilities" else np.argmax(p, axis=1)
            fn(name)(y, pred, n_classes=2, sample_weight=None)
        return time.perf_counter() - start

    ours = min(clock(lambda name: REGISTRY[name].fn) for _ in range(2))
    theirs = min(clock(lambda name: REFERENCE[name]) for _ in range(2))
    assert ours < theirs
    assert metrics.compute_metrics("binary_classification", ["roc_auc", "log_loss"], y, p)
