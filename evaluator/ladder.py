"""The parameter-free Ladder (Blum & Hardt, 2015), kept at the site.

Per (task, vendor) the site keeps `best` (the mean per-example loss it last released) and the
per-example losses of the submission that set it. A new submission moves `best` only if its mean
loss beats `best` by the paired standard error; otherwise the vendor learns only "no
improvement". The released transcript is fixed by which submissions moved `best`, which bounds
what probing the hidden labels can learn (SECURITY.md section 3).

The per-example losses never leave the site: they live in the site's data folder.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EPS = 1e-15


@dataclass(frozen=True)
class LadderState:
    best: float = math.inf
    leader_losses: np.ndarray | None = None


@dataclass(frozen=True)
class LadderStep:
    state: LadderState
    improved: bool


def ladder_step(state: LadderState, losses: np.ndarray) -> LadderStep:
    """One submission through the Ladder; `losses` are its per-example losses (lower is better)."""
    losses = np.asarray(losses, dtype=np.float64)
    n = losses.size
    if n < 2 or not np.all(np.isfinite(losses)):
        raise ValueError("the Ladder needs at least two finite per-example losses")
    if state.leader_losses is not None and state.leader_losses.shape != losses.shape:
        # The split changed under us (data re-registered): start a fresh ladder.
        state = LadderState()
    if state.leader_losses is None:
        spread = float(np.std(losses, ddof=1))
    else:
        spread = float(np.std(losses - state.leader_losses, ddof=1))
    mean = float(np.mean(losses))
    if mean < state.best - spread / math.sqrt(n):
        return LadderStep(LadderState(best=mean, leader_losses=losses.copy()), improved=True)
    return LadderStep(state, improved=False)


def per_example_loss(task_type: str, y_true: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """The Ladder's loss: log loss per row for classification, squared error for regression."""
    y_true = np.asarray(y_true)
    if task_type == "regression":
        values = np.asarray(predictions, dtype=np.float64).reshape(len(y_true))
        return (values - y_true.astype(np.float64)) ** 2
    proba = np.asarray(predictions, dtype=np.float64)
    if proba.ndim == 1 or proba.shape[1] == 1:
        p1 = np.clip(proba.reshape(-1), EPS, 1 - EPS)
        proba = np.column_stack([1 - p1, p1])
    picked = proba[np.arange(len(y_true)), y_true.astype(int)]
    return -np.log(np.clip(picked, EPS, 1.0))


def release_cost_bits(decimals: list[int], *, ladder: bool, improved: bool) -> float:
    """An upper bound on the information one release carries, in bits.

    A value rounded to d decimals in a bounded range takes at most 10^d + 1 values; the Ladder
    adds one bit (moved or not) and releases nothing new when it did not move.
    """
    values_bits = sum(math.log2(10**d + 1) for d in decimals)
    if not ladder:
        return values_bits
    return 1.0 + (values_bits if improved else 0.0)


class LadderStore:
    """The site's Ladder states, one file per (task, vendor), written atomically."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, task_id: int | str, vendor_id: int | str) -> Path:
        return self.root / f"task-{int(task_id)}" / f"vendor-{int(vendor_id)}.npz"

    def load(self, task_id: int | str, vendor_id: int | str) -> tuple[LadderState, dict[str, float] | None]:
        path = self._path(task_id, vendor_id)
        if not path.exists():
            return LadderState(), None
        with np.load(path, allow_pickle=False) as data:
            names = [str(n) for n in data["metric_names"]]
            released = dict(zip(names, (float(v) for v in data["metric_values"]), strict=True))
            return LadderState(best=float(data["best"]), leader_losses=data["leader_losses"].copy()), released

    def save(self, task_id: int | str, vendor_id: int | str, state: LadderState, released: dict[str, float]) -> None:
        path = self._path(task_id, vendor_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            best=np.float64(state.best),
            leader_losses=np.asarray(state.leader_losses, dtype=np.float64),
            metric_names=np.array(sorted(released), dtype=str),
            metric_values=np.array([released[k] for k in sorted(released)], dtype=np.float64),
        )
        os.replace(tmp, path)
