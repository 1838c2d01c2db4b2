"""Leaderboard metrics, computed on the site: scikit-learn's definitions, on checked arrays.

Every metric follows scikit-learn's convention ``metric(y_true, y_pred, *, sample_weight=None)``
and is registered with its direction (``higher`` or ``lower`` is better) and the prediction it
needs:

- ``labels``: class indices; probabilities are turned into labels with argmax (binary: P(class 1)
  > 0.5, which is the same thing);
- ``probabilities``: an ``(n_rows, n_classes)`` probability matrix (binary: P(class 1) for
  ``roc_auc``);
- ``values``: regression outputs, shape ``(n_rows,)``.

The model's raw output (``docs/model-contract.md``) is normalised once by
:func:`class_probabilities` or :func:`regression_values`; a malformed output raises
``InvalidPredictions`` (coarse reason ``invalid_output``). Labels never reach the sandbox: they are
only read here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

TASK_TYPES = ("binary_classification", "multiclass_classification", "regression")
CLASSIFICATION = frozenset({"binary_classification", "multiclass_classification"})
REGRESSION = frozenset({"regression"})

# Probability rows must sum to 1 within this tolerance; they are then renormalised exactly.
PROBABILITY_SUM_TOLERANCE = 1e-3


class MetricError(ValueError):
    """A metric name is unknown or does not apply to the task type."""

    reason = "policy_violation"


class InvalidPredictions(ValueError):
    """The model's output cannot be read as the predictions the metrics need."""

    reason = "invalid_output"


@dataclass(frozen=True)
class Metric:
    name: str
    direction: Literal["higher", "lower"]
    needs: Literal["labels", "probabilities", "values"]
    task_types: frozenset[str]
    # fn(y_true, y_pred, *, n_classes, sample_weight) -> float
    fn: Callable[..., float]

    def __call__(
        self,
        y_true: Any,
        y_pred: Any,
        *,
        n_classes: int | None = None,
        sample_weight: Any = None,
    ) -> float:
        return float(self.fn(y_true, y_pred, n_classes=n_classes, sample_weight=sample_weight))


# --- the metrics, on arrays this module has already checked ------------------------------------
#
# ``compute_metrics`` validates once (``class_probabilities`` / ``regression_values``: shape,
# finite, range, rows summing to 1; labels are the site's own, already checked against the task),
# so the metrics below compute straight from numpy. ``sklearn.metrics`` re-validates every array
# on every call (0.3 s for two metrics at 1M rows, more than the predict). Each function gives
# what the ``sklearn.metrics`` call in ``_sklearn_reference`` gives, to float rounding; where
# scikit-learn raises ValueError or returns NaN (a metric undefined on this data), so do these
# (compute_metrics turns a NaN into ValueError). tests/evaluator/test_metrics_reference.py
# checks them against scikit-learn on many random cases and the edge cases.


def _mean(values: np.ndarray, sample_weight: Any) -> float:
    if sample_weight is None:
        return float(np.mean(values)) if values.size else float("nan")
    return float(np.average(values, weights=np.asarray(sample_weight, dtype=np.float64)))


def _confusion(y: np.ndarray, p: np.ndarray, k: int, sample_weight: Any) -> np.ndarray:
    """(k, k) confusion counts (rows: true class, columns: predicted), weighted."""
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    flat = np.asarray(y, dtype=np.int64) * k + np.asarray(p, dtype=np.int64)
    return np.bincount(flat, weights=weights, minlength=k * k).reshape(k, k).astype(np.float64)


def _n_labels(y: np.ndarray, p: np.ndarray, n_classes: int | None) -> int:
    top = int(max(np.max(y, initial=0), np.max(p, initial=0))) + 1
    return max(n_classes or 2, top)


def _accuracy(y, p, *, n_classes, sample_weight):
    return _mean(np.asarray(y) == np.asarray(p), sample_weight)


def _balanced_accuracy(y, p, *, n_classes, sample_weight):
    confusion = _confusion(y, p, _n_labels(y, p, n_classes), sample_weight)
    support = confusion.sum(axis=1)
    present = support > 0  # scikit-learn drops the classes with no true sample (NaN recall)
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(confusion)[present] / support[present]))


def _f1(y, p, *, n_classes, sample_weight):
    k = n_classes or 2
    confusion = _confusion(y, p, max(k, _n_labels(y, p, k)), sample_weight)[:k, :k]
    tp = np.diag(confusion)
    denominator = 2 * tp + (confusion.sum(axis=0) - tp) + (confusion.sum(axis=1) - tp)
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)  # zero_division=0
    return float(f1[1]) if k == 2 else float(np.mean(f1))


def _binary_auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting
    one half (what the trapezoids under scikit-learn's ``roc_curve`` add up to)."""
    pos_total, neg_total = weights[positive].sum(), weights[~positive].sum()
    if not (positive.any() and (~positive).any()):
        raise ValueError("Only one class present in y_true. ROC AUC score is not defined in that case.")
    if pos_total <= 0 or neg_total <= 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_score = score[order]
    pos_w = np.where(positive[order], weights[order], 0.0)
    neg_w = np.where(positive[order], 0.0, weights[order])
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])  # groups of ties
    pos_group = np.add.reduceat(pos_w, starts)
    neg_group = np.add.reduceat(neg_w, starts)
    neg_below = np.cumsum(neg_group) - neg_group
    return float(np.sum(pos_group * (neg_below + 0.5 * neg_group)) / (pos_total * neg_total))


def _roc_auc(y, proba, *, n_classes, sample_weight):
    y = np.asarray(y)
    proba = np.asarray(proba, dtype=np.float64)
    k = n_classes or proba.shape[1]
    weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if k == 2:
        return _binary_auc(y == 1, proba[:, 1], weights)
    return float(np.mean([_binary_auc(y == c, proba[:, c], weights) for c in range(k)]))  # ovr, macro


def _log_loss(y, proba, *, n_classes, sample_weight):
    proba = np.asarray(proba, dtype=np.float64)
    eps = np.finfo(np.float64).eps
    picked = np.clip(proba[np.arange(len(proba)), np.asarray(y, dtype=np.int64)], eps, 1 - eps)
    return _mean(-np.log(picked), sample_weight)


def _mse(y, v, *, n_classes, sample_weight):
    return _mean((np.asarray(y, dtype=np.float64) - v) ** 2, sample_weight)


def _mae(y, v, *, n_classes, sample_weight):
    return _mean(np.abs(np.asarray(y, dtype=np.float64) - v), sample_weight)


def _r2(y, v, *, n_classes, sample_weight):
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 2:
        return float("nan")  # scikit-learn: not well-defined with fewer than two samples
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    numerator = float(np.sum(w * (y - v) ** 2))
    denominator = float(np.sum(w * (y - np.average(y, weights=w)) ** 2))
    if denominator == 0:  # scikit-learn's force_finite
        return 1.0 if numerator == 0 else 0.0
    return 1 - numerator / denominator


def _sklearn_reference() -> dict[str, Callable[..., float]]:
    """The ``sklearn.metrics`` calls the functions above stand for (tests compare them)."""
    from sklearn import metrics as skm

    def average(k: int | None) -> str:
        return "binary" if (k or 2) == 2 else "macro"

    def roc_auc(y, proba, *, n_classes, sample_weight):
        k = n_classes or proba.shape[1]
        if k == 2:
            return skm.roc_auc_score(y, proba[:, 1], sample_weight=sample_weight)
        return skm.roc_auc_score(
            y, proba, multi_class="ovr", average="macro", labels=list(range(k)), sample_weight=sample_weight
        )

    return {
        "accuracy": lambda y, p, *, n_classes, sample_weight: skm.accuracy_score(y, p, sample_weight=sample_weight),
        "balanced_accuracy": lambda y, p, *, n_classes, sample_weight: skm.balanced_accuracy_score(
            y, p, sample_weight=sample_weight
        ),
        "roc_auc": roc_auc,
        "f1": lambda y, p, *, n_classes, sample_weight: skm.f1_score(
            y, p, labels=list(range(n_classes or 2)), average=average(n_classes), sample_weight=sample_weight,
            zero_division=0,
        ),
        "log_loss": lambda y, proba, *, n_classes, sample_weight: skm.log_loss(
            y, y_proba=proba, labels=list(range(n_classes or proba.shape[1])), sample_weight=sample_weight
        ),
        "mean_squared_error": lambda y, v, *, n_classes, sample_weight: skm.mean_squared_error(
            y, v, sample_weight=sample_weight
        ),
        "mean_absolute_error": lambda y, v, *, n_classes, sample_weight: skm.mean_absolute_error(
            y, v, sample_weight=sample_weight
        ),
        "r2": lambda y, v, *, n_classes, sample_weight: skm.r2_score(y, v, sample_weight=sample_weight),
    }


REGISTRY: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", "higher", "labels", CLASSIFICATION, _accuracy),
        Metric("balanced_accuracy", "higher", "labels", CLASSIFICATION, _balanced_accuracy),
        Metric("roc_auc", "higher", "probabilities", CLASSIFICATION, _roc_auc),
        Metric("f1", "higher", "labels", CLASSIFICATION, _f1),
        Metric("log_loss", "lower", "probabilities", CLASSIFICATION, _log_loss),
        Metric("mean_squared_error", "lower", "values", REGRESSION, _mse),
        Metric("mean_absolute_error", "lower", "values", REGRESSION, _mae),
        Metric("r2", "higher", "values", REGRESSION, _r2),
    )
}


def get_metric(name: str, task_type: str | None = None) -> Metric:
    metric = REGISTRY.get(name)
    if metric is None:
        raise MetricError(f"unknown metric {name!r}")
    if task_type is not None and task_type not in metric.task_types:
        raise MetricError(f"metric {name!r} does not apply to {task_type}")
    return metric


def check_metric_names(task_type: str, metric_names: Iterable[str]) -> list[str]:
    """Validate a job's metric list against the registry; returns the names in order."""
    if task_type not in TASK_TYPES:
        raise MetricError(f"unknown task type {task_type!r}")
    names = list(metric_names)
    if not names:
        raise MetricError("the task lists no metrics")
    for name in names:
        get_metric(name, task_type)
    return names


def value_range(array: np.ndarray) -> tuple[float, float]:
    """(smallest, largest) value, (0, 0) when empty: two reductions and no temporary. A NaN makes
    both NaN and an infinity is one of them, so they also tell whether every value is finite (at
    1M rows a third of ``np.isfinite``'s time)."""
    return (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)


def all_finite(array: np.ndarray) -> bool:
    """No NaN or infinity."""
    if array.dtype.kind != "f":
        return True
    return all(math.isfinite(v) for v in value_range(array))


# Rows per pass of the checks and the normalisation below: each chunk's temporaries stay in the
# CPU's cache (at 1M rows x 2 columns, read + check + normalise take 8 ms instead of 18;
# BENCHMARKS.md, session 7). Every result is the same as one pass over all rows.
ROWS_PER_CHUNK = 65536


def chunks(n_rows: int) -> list[slice]:
    """The row ranges of ``ROWS_PER_CHUNK`` rows covering ``n_rows`` (none for 0 rows)."""
    return [slice(start, start + ROWS_PER_CHUNK) for start in range(0, n_rows, ROWS_PER_CHUNK)]


def scan(array: np.ndarray, *, row_sum_deviation: bool) -> tuple[float, float, float]:
    """(smallest value, largest value, largest |row sum - 1|) of ``array`` in one cache-sized pass
    per chunk of rows: ``value_range`` of the whole, and the deviation of its row sums when asked
    (0 otherwise). A NaN anywhere makes the first two NaN, as ``value_range`` does."""
    if array.size == 0:
        return 0.0, 0.0, 0.0
    lows, highs, worst = [], [], 0.0
    for rows in chunks(len(array)):
        part = array[rows]
        low, high = value_range(part)
        lows.append(low)
        highs.append(high)
        if row_sum_deviation:
            worst = max(worst, float(np.max(np.abs(row_sums(part) - 1.0))))
    return float(np.min(lows)), float(np.max(highs)), worst


def row_sums(array: np.ndarray) -> np.ndarray:
    """``array.sum(axis=1)``; for two columns the same values as one vectorised add (numpy's
    reduction over a short axis is several times slower)."""
    return array[:, 0] + array[:, 1] if array.shape[1] == 2 else array.sum(axis=1)


def class_probabilities(predictions: Any, *, n_rows: int, n_classes: int) -> np.ndarray:
    """An ``(n_rows, n_classes)`` float64 probability matrix from the model's output.

    Binary tasks accept 2 columns, or 1 column / a vector meaning P(class 1).
    """
    p = np.asarray(predictions, dtype=np.float64)
    if n_classes == 2 and (p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1)):
        p1 = p.reshape(-1)
        p = np.stack([1.0 - p1, p1], axis=1)
    if p.shape != (n_rows, n_classes):
        raise InvalidPredictions(f"expected probabilities of shape ({n_rows}, {n_classes}), got {p.shape}")
    # One pass per chunk of rows: the range, then clipping (only where a chunk leaves [0, 1]: it
    # changes nothing elsewhere), the row sums and the division. A bad sum is reported only after
    # the range checks of all rows, as one pass over all rows would order them.
    out = np.empty_like(p)
    lows, highs, bad_sum = [], [], False
    for rows in chunks(n_rows):
        part = p[rows]
        low, high = value_range(part)
        lows.append(low)
        highs.append(high)
        if low < 0.0 or high > 1.0:
            part = np.clip(part, 0.0, 1.0)
        sums = row_sums(part)
        bad_sum = bad_sum or not bool(np.all(np.abs(sums - 1.0) <= PROBABILITY_SUM_TOLERANCE))
        np.divide(part, sums[:, None], out=out[rows])
    low, high = (float(np.min(lows)), float(np.max(highs))) if lows else (0.0, 0.0)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InvalidPredictions("probabilities must be finite")
    if min(low, 0.0) < -1e-6 or max(high, 0.0) > 1 + 1e-6:
        raise InvalidPredictions("probabilities must lie in [0, 1]")
    if bad_sum:
        raise InvalidPredictions("each row of class probabilities must sum to 1")
    return out


def regression_values(predictions: Any, *, n_rows: int) -> np.ndarray:
    v = np.asarray(predictions, dtype=np.float64)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.shape != (n_rows,):
        raise InvalidPredictions(f"expected values of shape ({n_rows},), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise InvalidPredictions("values must be finite")
    return v


def compute_metrics(
    task_type: str,
    metric_names: Iterable[str],
    y_true: Any,
    predictions: Any,
    *,
    n_classes: int | None = None,
    sample_weight: Any = None,
) -> dict[str, float]:
    """Compute each named metric of ``predictions`` against ``y_true``.

    ``n_classes`` defaults to 2 for binary tasks and to the prediction's column count for
    multiclass tasks. Raises ``MetricError`` for an unknown or inapplicable metric,
    ``InvalidPredictions`` for malformed predictions, and ``ValueError`` when a metric is
    undefined on this data (e.g. ROC AUC with a single class present).
    """
    names = check_metric_names(task_type, metric_names)
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError("y_true must be one-dimensional")
    n_rows = y.shape[0]
    results: dict[str, float] = {}
    if task_type == "regression":
        values = regression_values(predictions, n_rows=n_rows)
        inputs = {"values": values}
    else:
        if n_classes is None:
            pred = np.asarray(predictions)
            n_classes = (
                2 if task_type == "binary_classification" else (pred.shape[1] if pred.ndim == 2 else 0)
            )
        if n_classes < 2:
            raise InvalidPredictions("classification needs at least 2 classes")
        proba = class_probabilities(predictions, n_rows=n_rows, n_classes=n_classes)
        y = y.astype(np.int64)
        inputs = {"probabilities": proba, "labels": np.argmax(proba, axis=1)}
    for name in names:
        metric = REGISTRY[name]
        value = metric(y, inputs[metric.needs], n_classes=n_classes, sample_weight=sample_weight)
        if not math.isfinite(value):
            raise ValueError(f"metric {name} is undefined on this data")
        results[name] = value
    return results
