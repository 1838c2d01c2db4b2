"""Robust aggregation rules against poisoned site updates.

Only usable WITHOUT secure aggregation: each rule needs the individual updates, which secure
aggregation exists to hide. With secure aggregation, the defence is the per-site clip (every
update is bounded by C before masking), nothing more.

Inputs are a stack of flat updates, shape ``(n_sites, dim)`` (or a sequence of 1-D vectors).
Krum is deliberately absent: it needs n > 2f + 2 sites, which a handful of hospitals never reach.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _stack(updates: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    stacked = np.asarray(updates, dtype=np.float64)
    if stacked.ndim != 2 or stacked.shape[0] == 0:
        raise ValueError(f"updates must be a non-empty (n_sites, dim) stack, got shape {stacked.shape}")
    if not np.all(np.isfinite(stacked)):
        raise ValueError("updates contain non-finite values")
    return stacked


def norm_bound(updates: np.ndarray | Sequence[np.ndarray], max_norm: float) -> np.ndarray:
    """Scale every update whose L2 norm exceeds ``max_norm`` down to it; others are unchanged."""
    if not max_norm > 0:
        raise ValueError("max_norm must be > 0")
    stacked = _stack(updates)
    norms = np.linalg.norm(stacked, axis=1)
    scale = np.minimum(1.0, max_norm / np.maximum(norms, np.finfo(np.float64).tiny))
    return stacked * scale[:, None]


def mean(updates: np.ndarray | Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Plain (optionally weighted) mean; the non-robust baseline."""
    stacked = _stack(updates)
    if weights is None:
        return stacked.mean(axis=0)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (stacked.shape[0],) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be one non-negative number per update, not all zero")
    return (w[:, None] * stacked).sum(axis=0) / w.sum()


def coordinate_median(updates: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Coordinate-wise median (Yin et al. 2018)."""
    return np.median(_stack(updates), axis=0)


def trimmed_mean(
    updates: np.ndarray | Sequence[np.ndarray], beta: float, *, n_byzantine: int | None = None
) -> np.ndarray:
    """Coordinate-wise beta-trimmed mean: drop the ``floor(beta * n)`` largest and smallest values of
    each coordinate, average the rest. Tolerates ``f`` poisoned sites only if ``beta >= f / n``;
    pass ``n_byzantine=f`` to have that checked."""
    stacked = _stack(updates)
    n = stacked.shape[0]
    if not 0 <= beta < 0.5:
        raise ValueError(f"beta must be in [0, 0.5), got {beta!r}")
    if n_byzantine is not None and beta * n < n_byzantine:
        raise ValueError(
            f"beta={beta} trims fewer than the {n_byzantine} poisoned sites of {n}: need beta >= f/n"
        )
    k = math.floor(beta * n + 1e-9)
    if 2 * k >= n:
        raise ValueError(f"trimming {k} from each side of {n} updates leaves nothing")
    ordered = np.sort(stacked, axis=0)
    return ordered[k : n - k].mean(axis=0)


def cap_example_counts(counts: Sequence[int] | np.ndarray, cap: int) -> np.ndarray:
    """Self-reported example counts, each capped: a site cannot buy more weight by claiming more."""
    if cap < 1:
        raise ValueError("cap must be >= 1")
    c = np.asarray(counts)
    if c.ndim != 1 or not np.issubdtype(c.dtype, np.integer) or np.any(c < 0):
        raise ValueError("counts must be non-negative integers")
    return np.minimum(c, cap)
