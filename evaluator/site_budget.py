"""The site's own privacy budget: defence in depth behind the hub's (docs/disclosure.md).

Every release of a job's statistics costs rho (zCDP; rhos add up). Before a sandbox runs the
agent *reserves* the release's rho here, keyed by (job, split); the reservation counts against
two caps at once: the vendor's on the task (per split) and the task's total (per split), each
``min(hub's cap, site's own cap)``. A reservation is *committed* when the release is written to
the ledger and *refunded* when the job ends without a release (a failure before the model saw
data, a result the owner refused). A reservation whose agent died stays counted (never less
than what may have left) until that job is retried here and reuses it.

The state is one JSON file in the data folder, read and rewritten under an exclusive ``flock``:
several agents share a data folder, and two of them racing on one vendor's budget never pass
its cap. Splits are budgeted apart: a row is in one split only (parallel composition).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evaluator.locked_json import locked_json

SPLITS = ("public", "private")
_DEFAULTS: dict[str, Any] = {
    "reservations": {},  # "job|split" -> {task, vendor, split, rho, at}
    "vendor_spent": {},  # "task|vendor|split" -> committed rho
    "task_spent": {},  # "task|split" -> committed rho
}
# Relative slack for float sums: n releases of rho must fit a cap of exactly n * rho.
_SLACK = 1e-9


class BudgetRefused(Exception):
    """The release would pass a cap of the site's budget (``policy_violation``)."""

    reason = "policy_violation"


@dataclass(frozen=True)
class Usage:
    """Rho committed (released) and reserved (in flight) on one budget."""

    spent: float
    reserved: float

    @property
    def total(self) -> float:
        return self.spent + self.reserved


def _key(*parts: Any) -> str:
    return "|".join(str(p) for p in parts)


class SiteBudget:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _locked(self, *, write: bool) -> contextlib.AbstractContextManager[dict[str, Any]]:
        return locked_json(self.path, write=write, defaults=_DEFAULTS)

    @staticmethod
    def _usage(data: dict[str, Any], task_id: Any, split: str, vendor_id: Any = None) -> Usage:
        """Usage of the task's budget (``vendor_id`` None) or of one vendor's on it."""
        if vendor_id is None:
            spent = float(data["task_spent"].get(_key(task_id, split), 0.0))
        else:
            spent = float(data["vendor_spent"].get(_key(task_id, vendor_id, split), 0.0))
        reserved = sum(
            float(r["rho"])
            for r in data["reservations"].values()
            if r["task"] == str(task_id)
            and r["split"] == split
            and (vendor_id is None or r["vendor"] == str(vendor_id))
        )
        return Usage(spent, reserved)

    def reserve(
        self,
        *,
        job_id: Any,
        task_id: Any,
        vendor_id: Any,
        split: str,
        rho: float,
        vendor_cap_rho: float,
        task_cap_rho: float,
    ) -> bool:
        """Reserve one release of ``rho``; returns False when this (job, split) already holds a
        reservation (a retried job reuses it: nothing more is charged). Raises
        ``BudgetRefused`` when the release would pass either cap; nothing is reserved then."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}")
        if not rho > 0:
            raise ValueError("rho must be positive")
        with self._locked(write=True) as data:
            if _key(job_id, split) in data["reservations"]:
                return False
            vendor = self._usage(data, task_id, split, vendor_id)
            task = self._usage(data, task_id, split)
            if vendor.total + rho > vendor_cap_rho * (1 + _SLACK):
                raise BudgetRefused(
                    f"the vendor's {split} budget on task {task_id} at this site is spent "
                    f"(rho {vendor.total:.6g} used of {vendor_cap_rho:.6g}; this release needs {rho:.6g})"
                )
            if task.total + rho > task_cap_rho * (1 + _SLACK):
                raise BudgetRefused(
                    f"the task's {split} budget at this site is spent "
                    f"(rho {task.total:.6g} used of {task_cap_rho:.6g}; this release needs {rho:.6g})"
                )
            data["reservations"][_key(job_id, split)] = {
                "task": str(task_id),
                "vendor": str(vendor_id),
                "split": split,
                "rho": float(rho),
                "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            }
            return True

    def commit(self, *, job_id: Any, split: str, task_id: Any, vendor_id: Any, rho: float) -> bool:
        """The release happened: its rho is spent for good. Returns True when it settled a
        reservation; without one (the file was reset meanwhile) the release is charged anyway,
        whatever the caps: what left has left."""
        with self._locked(write=True) as data:
            held = data["reservations"].pop(_key(job_id, split), None)
            charge = held or {
                "task": str(task_id),
                "vendor": str(vendor_id),
                "split": split,
                "rho": float(rho),
            }
            vendor_key = _key(charge["task"], charge["vendor"], charge["split"])
            task_key = _key(charge["task"], charge["split"])
            data["vendor_spent"][vendor_key] = (
                float(data["vendor_spent"].get(vendor_key, 0.0)) + charge["rho"]
            )
            data["task_spent"][task_key] = float(data["task_spent"].get(task_key, 0.0)) + charge["rho"]
            return held is not None

    def refund(self, *, job_id: Any, split: str) -> bool:
        """The job ends without a release: its reservation is given back."""
        with self._locked(write=True) as data:
            return data["reservations"].pop(_key(job_id, split), None) is not None

    def is_reserved(self, *, job_id: Any, split: str) -> bool:
        with self._locked(write=False) as data:
            return _key(job_id, split) in data["reservations"]

    def usage(self, *, task_id: Any, split: str, vendor_id: Any = None) -> Usage:
        """Rho spent and reserved on the task's budget, or on one vendor's (``vendor_id``)."""
        with self._locked(write=False) as data:
            return self._usage(data, task_id, split, vendor_id)

    def reservations(self) -> dict[str, dict[str, Any]]:
        with self._locked(write=False) as data:
            return {k: dict(v) for k, v in data["reservations"].items()}
