"""Sufficient statistics of the leaderboard metrics, with a per-row sensitivity each.

A site never releases a metric value: it releases the (noised) statistics the metric is a
function of, and the hub sums the sites' statistics and computes the metric from the sum, so a
model's score does not depend on how the rows are spread over sites, and a metric undefined at
one site (ROC AUC where a site lacks a class) is defined on the pool.

Every block below is a sum over rows of a bounded per-row contribution, so replacing one row
changes it by at most ``sensitivity`` in L2 norm (the neighbouring relation is *replace one
row*: each site's row count is public metadata). Contributions are clipped first:

====================  =========================================  ===========================
block                 per-row contribution                       L2 sensitivity
====================  =========================================  ===========================
correct               1 if the predicted class is the label      1
confusion (k x k)     one-hot at (label, predicted class)        sqrt(2)
log_loss_sum          min(-ln p_label, LOG_LOSS_CLIP)            LOG_LOSS_CLIP = ln(100)
score_histogram       binary (2, B): one-hot at (label, bin(p1)) sqrt(2)
                      k classes (k, 2, B): for each class c, a   sqrt(2k)
                      one at (c, label == c, bin(p_c))
squared_error_sum     min((y_hat - y)^2, span^2)                 span^2
abs_error_sum         min(abs(y_hat - y), span)                  span
target_sum            y clipped to [lo, hi]                      span
target_sq_sum         (y clipped)^2                              max y^2 - min y^2 on [lo, hi]
====================  =========================================  ===========================

``span = hi - lo`` of the regression task's ``target_range``. Metrics: accuracy, balanced
accuracy and F1 (binary, or macro over all classes) from the confusion matrix; log loss from
the clipped sum (so a confidently wrong row costs at most ln(100)); ROC AUC from the binned
score histogram (scores within one bin count as ties; one-vs-rest macro for k classes); MSE,
MAE and R^2 from the clipped error and target sums. On exact statistics each equals the
scikit-learn metric of the clipped or binned inputs (tests/privacy). Accuracy needs only the
count of correct rows; it is read off the confusion matrix when that is released anyway.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LOG_LOSS_FLOOR = 0.01  # probabilities below it count as it: one row costs at most ln(100)
LOG_LOSS_CLIP = -math.log(LOG_LOSS_FLOOR)
ROWS_PER_CHUNK = 65536  # rows per pass of sufficient_statistics (its docstring)
SCORE_BINS = 10  # fewer bins, less noise in total; the binning itself costs < 0.02 AUC (BENCHMARKS.md)

CLASSIFICATION = frozenset({"binary_classification", "multiclass_classification"})
METRIC_BLOCKS: dict[str, tuple[str, ...]] = {
    "accuracy": ("correct",),
    "balanced_accuracy": ("confusion",),
    "f1": ("confusion",),
    "log_loss": ("log_loss_sum",),
    "roc_auc": ("score_histogram",),
    "mean_squared_error": ("squared_error_sum",),
    "mean_absolute_error": ("abs_error_sum",),
    "r2": ("squared_error_sum", "target_sum", "target_sq_sum"),
}
# The range a metric takes; values computed from noised statistics are clamped into it.
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "accuracy": (0.0, 1.0),
    "balanced_accuracy": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "log_loss": (0.0, LOG_LOSS_CLIP),
    "roc_auc": (0.0, 1.0),
    "mean_squared_error": (0.0, math.inf),
    "mean_absolute_error": (0.0, math.inf),
    "r2": (-math.inf, 1.0),
}


class StatisticsError(ValueError):
    """Statistics do not match the task's release spec (unknown block, wrong shape, not finite)."""


@dataclass(frozen=True)
class ReleaseSpec:
    """What a task releases per site and job: derived from the task alone, so the site and the
    hub derive the same one."""

    task_type: str
    metric_names: tuple[str, ...]
    n_classes: int | None = None  # classification: 2 for binary
    target_range: tuple[float, float] | None = None  # regression: [lo, hi] of the targets

    def __post_init__(self) -> None:
        unknown = [m for m in self.metric_names if m not in METRIC_BLOCKS]
        if unknown or not self.metric_names:
            raise StatisticsError(f"no release is defined for metrics {unknown or 'none'}")
        if self.task_type in CLASSIFICATION:
            if not isinstance(self.n_classes, int) or self.n_classes < 2:
                raise StatisticsError("a classification task needs n_classes >= 2")
        elif self.task_type == "regression":
            lo_hi = self.target_range
            if (
                lo_hi is None
                or len(lo_hi) != 2
                or not all(math.isfinite(v) for v in lo_hi)
                or lo_hi[0] >= lo_hi[1]
            ):
                raise StatisticsError("a regression task needs target_range [lo, hi] with lo < hi")
        else:
            raise StatisticsError(f"unknown task type {self.task_type!r}")

    @classmethod
    def for_task(
        cls, *, task_type: str, metric_names: Iterable[str], input_spec: Mapping | None
    ) -> ReleaseSpec:
        spec = input_spec or {}
        n_classes = 2 if task_type == "binary_classification" else spec.get("n_classes")
        target = spec.get("target_range") if task_type == "regression" else None
        return cls(
            task_type=task_type,
            metric_names=tuple(metric_names),
            n_classes=n_classes if task_type in CLASSIFICATION else None,
            target_range=(float(target[0]), float(target[1]))
            if isinstance(target, list | tuple) and len(target) == 2
            else None,
        )

    @property
    def blocks(self) -> tuple[str, ...]:
        """The statistic blocks released, in a fixed order, each once."""
        seen: list[str] = []
        for name in self.metric_names:
            for block in METRIC_BLOCKS[name]:
                if block not in seen:
                    seen.append(block)
        if "confusion" in seen and "correct" in seen:  # accuracy is the confusion matrix's trace
            seen.remove("correct")
        return tuple(seen)

    def shape(self, block: str) -> tuple[int, ...]:
        k = self.n_classes or 2
        if block == "confusion":
            return (k, k)
        if block == "score_histogram":
            return (2, SCORE_BINS) if k == 2 else (k, 2, SCORE_BINS)
        return (1,)

    def sensitivity(self, block: str) -> float:
        """L2 sensitivity of the block to replacing one row."""
        if block == "confusion":
            return math.sqrt(2.0)
        if block == "correct":
            return 1.0
        if block == "log_loss_sum":
            return LOG_LOSS_CLIP
        if block == "score_histogram":
            k = self.n_classes or 2
            return math.sqrt(2.0) if k == 2 else math.sqrt(2.0 * k)
        assert self.target_range is not None
        lo, hi = self.target_range
        span = hi - lo
        if block == "squared_error_sum":
            return span**2
        if block in ("abs_error_sum", "target_sum"):
            return span
        if block == "target_sq_sum":
            smallest = 0.0 if lo <= 0.0 <= hi else min(lo * lo, hi * hi)
            return max(lo * lo, hi * hi) - smallest
        raise StatisticsError(f"unknown block {block!r}")


def _bins(scores: np.ndarray) -> np.ndarray:
    # Two temporaries instead of four (a million rows per job): in [0, B], the float minimum then
    # truncation equals truncation then the integer minimum.
    bins = np.clip(scores, 0.0, 1.0) * SCORE_BINS
    np.minimum(bins, SCORE_BINS - 1, out=bins)
    return bins.astype(np.int64)


def _predicted_classes(proba: np.ndarray) -> np.ndarray:
    """argmax per row; for two classes one comparison (argmax over a 2-wide axis is slow in numpy).
    Ties go to class 0 either way: argmax takes the first maximum."""
    if proba.shape[1] == 2:
        return (proba[:, 1] > proba[:, 0]).astype(np.int64)
    return np.argmax(proba, axis=1)


def sufficient_statistics(
    spec: ReleaseSpec, y_true: np.ndarray, predictions: np.ndarray
) -> dict[str, np.ndarray]:
    """The exact statistics of one site's rows. ``predictions``: an ``(n, k)`` probability matrix
    for classification (rows summing to 1), values of shape ``(n,)`` for regression.

    Classification is computed ``ROWS_PER_CHUNK`` rows at a time: every block is a sum over rows,
    so the chunks' blocks add up to the whole's, and each chunk's temporaries stay in the CPU's
    cache (at 1M rows 12 ms instead of 22-27; BENCHMARKS.md, session 7)."""
    y = np.asarray(y_true)
    if spec.task_type not in CLASSIFICATION:
        return _statistics(spec, y, predictions)
    k = spec.n_classes or 2
    proba = np.asarray(predictions, dtype=np.float64)
    if proba.shape != (len(y), k):
        raise StatisticsError(f"expected probabilities of shape ({len(y)}, {k}), got {proba.shape}")
    total: dict[str, np.ndarray] | None = None
    for start in range(0, len(y), ROWS_PER_CHUNK):
        stop = start + ROWS_PER_CHUNK
        part = _statistics(spec, y[start:stop], proba[start:stop])
        total = part if total is None else {block: total[block] + part[block] for block in total}
    return total if total is not None else _statistics(spec, y, proba)


def _statistics(spec: ReleaseSpec, y: np.ndarray, predictions: np.ndarray) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if spec.task_type in CLASSIFICATION:
        k = spec.n_classes or 2
        proba = np.asarray(predictions, dtype=np.float64)
        labels = y.astype(np.int64)
        if proba.shape != (len(labels), k):
            raise StatisticsError(f"expected probabilities of shape ({len(labels)}, {k}), got {proba.shape}")
        predicted = _predicted_classes(proba)  # once: confusion and correct both use it
        for block in spec.blocks:
            if block == "confusion":
                out[block] = (
                    np.bincount(labels * k + predicted, minlength=k * k)
                    .reshape(k, k)
                    .astype(np.float64)
                )
            elif block == "correct":
                out[block] = np.array([float(np.sum(predicted == labels))])
            elif block == "log_loss_sum":
                picked = np.maximum(proba[np.arange(len(labels)), labels], LOG_LOSS_FLOOR)
                out[block] = np.array([float(np.sum(-np.log(picked)))])
            elif block == "score_histogram":
                if k == 2:
                    flat = labels * SCORE_BINS + _bins(proba[:, 1])
                    out[block] = (
                        np.bincount(flat, minlength=2 * SCORE_BINS).reshape(2, SCORE_BINS).astype(np.float64)
                    )
                else:
                    hist = np.zeros((k, 2, SCORE_BINS))
                    for c in range(k):
                        is_c = (labels == c).astype(np.int64)
                        hist[c] = np.bincount(
                            is_c * SCORE_BINS + _bins(proba[:, c]), minlength=2 * SCORE_BINS
                        ).reshape(2, SCORE_BINS)
                    out[block] = hist
        return out
    assert spec.target_range is not None
    lo, hi = spec.target_range
    span = hi - lo
    values = np.asarray(predictions, dtype=np.float64).reshape(-1)
    target = y.astype(np.float64)
    error = np.clip(values - target, -span, span)
    clipped_target = np.clip(target, lo, hi)
    sums = {
        "squared_error_sum": np.sum(error**2),
        "abs_error_sum": np.sum(np.abs(error)),
        "target_sum": np.sum(clipped_target),
        "target_sq_sum": np.sum(clipped_target**2),
    }
    return {block: np.array([float(sums[block])]) for block in spec.blocks}


def check_statistics(spec: ReleaseSpec, statistics: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Parse released statistics: exactly the spec's blocks, each of its shape, finite."""
    if not isinstance(statistics, Mapping) or set(statistics) != set(spec.blocks):
        got = sorted(statistics) if isinstance(statistics, Mapping) else type(statistics).__name__
        raise StatisticsError(f"expected statistics {sorted(spec.blocks)}, got {got}")
    parsed: dict[str, np.ndarray] = {}
    for block in spec.blocks:
        try:
            value = np.asarray(statistics[block], dtype=np.float64)
        except (TypeError, ValueError):
            raise StatisticsError(f"statistic {block!r} is not an array of numbers") from None
        if value.shape != spec.shape(block):
            raise StatisticsError(
                f"statistic {block!r} must have shape {spec.shape(block)}, got {value.shape}"
            )
        if not np.all(np.isfinite(value)):
            raise StatisticsError(f"statistic {block!r} is not finite")
        parsed[block] = value
    return parsed


def pool(spec: ReleaseSpec, per_site: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The sum of the sites' statistics."""
    if not per_site:
        raise StatisticsError("nothing to pool")
    return {
        block: np.sum([np.asarray(s[block], dtype=np.float64) for s in per_site], axis=0)
        for block in spec.blocks
    }


def _auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """ROC AUC of binned scores: P(score of a positive > a negative's) + half the ties."""
    n_pos, n_neg = positives.sum(), negatives.sum()
    if n_pos < 0.5 or n_neg < 0.5:
        return math.nan
    below = np.concatenate([[0.0], np.cumsum(negatives)[:-1]])
    return float(np.sum(positives * (below + 0.5 * negatives)) / (n_pos * n_neg))


def _f1(confusion: np.ndarray, k: int) -> float:
    tp = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    denominator = predicted + actual
    per_class = np.clip(np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0.5), 0.0, 1.0)
    return float(per_class[1]) if k == 2 else float(per_class.mean())


def _metric(name: str, spec: ReleaseSpec, stats: Mapping[str, np.ndarray], n_rows: int) -> float:
    k = spec.n_classes or 2
    if name == "accuracy" and "confusion" not in stats:
        return float(stats["correct"][0] / n_rows)
    if name in ("accuracy", "balanced_accuracy", "f1"):
        # No clamping of single counts: zeroing the negative noise of the many small cells would
        # inflate row and column sums; ratios of unbiased sums are clamped at the end instead.
        confusion = stats["confusion"]
        if name == "accuracy":
            return float(np.trace(confusion) / n_rows)
        if name == "f1":
            return _f1(confusion, k)
        actual = confusion.sum(axis=1)
        present = actual >= 0.5  # a class with (about) no rows has no recall
        if not present.any():
            return math.nan
        return float(np.mean(np.clip(np.diag(confusion)[present] / actual[present], 0.0, 1.0)))
    if name == "log_loss":
        return float(stats["log_loss_sum"][0] / n_rows)
    if name == "roc_auc":
        hist = np.maximum(stats["score_histogram"], 0.0)  # stabler than raw counts here (BENCHMARKS.md)
        if k == 2:
            return _auc(hist[1], hist[0])
        per_class = [_auc(hist[c, 1], hist[c, 0]) for c in range(k)]
        defined = [a for a in per_class if not math.isnan(a)]
        return float(np.mean(defined)) if defined else math.nan
    if name == "mean_squared_error":
        return float(stats["squared_error_sum"][0] / n_rows)
    if name == "mean_absolute_error":
        return float(stats["abs_error_sum"][0] / n_rows)
    if name == "r2":
        total = stats["target_sq_sum"][0] - stats["target_sum"][0] ** 2 / n_rows
        if total <= 0:
            return math.nan
        return float(1.0 - stats["squared_error_sum"][0] / total)
    raise StatisticsError(f"unknown metric {name!r}")


def metrics_from_statistics(
    spec: ReleaseSpec, statistics: Mapping[str, np.ndarray], n_rows: int
) -> dict[str, float]:
    """Each metric of the spec from (pooled, possibly noised) statistics over ``n_rows`` rows,
    clamped to the metric's range. A metric undefined on these statistics is left out."""
    if n_rows <= 0:
        raise StatisticsError("no rows")
    values: dict[str, float] = {}
    for name in spec.metric_names:
        value = _metric(name, spec, statistics, n_rows)
        if math.isnan(value):
            continue
        low, high = METRIC_RANGES[name]
        values[name] = min(max(value, low), high)
    return values


# A noised value further than this many noise stds outside its block's exact range is not a
# release of this mechanism (probability below 1e-15 per value): the hub refuses it.
PLAUSIBLE_STDS = 8.0


def exact_range(spec: ReleaseSpec, block: str, n_rows: int) -> tuple[float, float]:
    """The range every entry of a block's exact (un-noised) value lies in, over ``n_rows`` rows."""
    if block in ("correct", "confusion", "score_histogram"):
        return 0.0, float(n_rows)
    if block == "log_loss_sum":
        return 0.0, n_rows * LOG_LOSS_CLIP
    assert spec.target_range is not None
    lo, hi = spec.target_range
    span = hi - lo
    if block == "squared_error_sum":
        return 0.0, n_rows * span**2
    if block == "abs_error_sum":
        return 0.0, n_rows * span
    if block == "target_sum":
        return n_rows * lo, n_rows * hi
    if block == "target_sq_sum":
        return n_rows * (0.0 if lo <= 0.0 <= hi else min(lo * lo, hi * hi)), n_rows * max(lo * lo, hi * hi)
    raise StatisticsError(f"unknown block {block!r}")


def check_plausible(
    spec: ReleaseSpec, statistics: Mapping[str, np.ndarray], *, n_rows: int, noise: Mapping[str, float]
) -> None:
    """Refuse statistics no honest site could have released: an entry outside its exact range by
    more than ``PLAUSIBLE_STDS`` noise stds (``noise``: std per block, from the mechanism)."""
    for block in spec.blocks:
        low, high = exact_range(spec, block, n_rows)
        slack = PLAUSIBLE_STDS * noise[block]
        value = np.asarray(statistics[block], dtype=np.float64)
        if value.min(initial=low) < low - slack or value.max(initial=high) > high + slack:
            raise StatisticsError(f"statistic {block!r} lies outside what {n_rows} rows can give")
