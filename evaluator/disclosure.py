"""What may leave a site for one job: the task's release terms, checked against the site's caps.

A site never releases a metric value. It releases the task's sufficient statistics with Gaussian
noise (``evaluator.privacy``), at a cost rho it derives itself from the task's epsilon per
release and delta: ``rho = rho_for_epsilon(epsilon, delta)``. The hub is not trusted with the
terms: a job without them is refused, and so is one asking a larger epsilon per release than
the site allows (``limits.max_epsilon_per_release``). The budgets a release is charged to are
capped by the smaller of the hub's and the site's own figures (``evaluator.site_budget``).

When the model fails after it has seen data (crash, timeout, out of memory, bad output), the
site releases the statistics of a fixed *fallback* prediction instead of a failure reason: the
reason would be a channel the model chooses, the fallback's score is priced like any release.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluator.config import LimitCaps
from evaluator.privacy.statistics import CLASSIFICATION, ReleaseSpec, StatisticsError
from evaluator.privacy.zcdp import rho_for_epsilon

MECHANISM = "gaussian"


class DisclosureError(ValueError):
    """The task's metrics or privacy terms are malformed or beyond the site's caps
    (``policy_violation``)."""

    reason = "policy_violation"


def metric_names(task_metrics: Iterable[Mapping[str, Any]]) -> list[str]:
    """The names in the task spec's ``metrics`` list: each named once, at least one. (Decimals
    no longer matter: the site releases noised statistics, not rounded values.)"""
    names: list[str] = []
    for item in task_metrics:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise DisclosureError("each task metric needs a name")
        if item["name"] in names:
            raise DisclosureError(f"metric {item['name']!r} is listed twice")
        names.append(item["name"])
    if not names:
        raise DisclosureError("the task lists no metrics")
    return names


@dataclass(frozen=True)
class ReleaseTerms:
    """One job's release: what is released (``spec``), its cost and the caps it is charged to.

    ``epsilon`` and ``delta`` are the task's, as the hub states them (the posted body carries
    them back); ``rho`` is derived here. The caps are rhos at ``delta``."""

    spec: ReleaseSpec
    epsilon: float
    delta: float
    rho: float
    vendor_epsilon: float  # min(hub's, site's)
    task_epsilon: float  # min(hub's, site's)

    @property
    def vendor_cap_rho(self) -> float:
        return rho_for_epsilon(self.vendor_epsilon, self.delta)

    @property
    def task_cap_rho(self) -> float:
        return rho_for_epsilon(self.task_epsilon, self.delta)

    def privacy(self) -> dict[str, Any]:
        """The posted body's ``privacy`` object."""
        return {"mechanism": MECHANISM, "rho": self.rho, "epsilon": self.epsilon, "delta": self.delta}

    def to_json(self) -> dict[str, Any]:
        """What the state file keeps, to release later (held results, private reveals)."""
        spec = self.spec
        return {
            "task_type": spec.task_type,
            "metric_names": list(spec.metric_names),
            "n_classes": spec.n_classes,
            "target_range": list(spec.target_range) if spec.target_range else None,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "vendor_epsilon": self.vendor_epsilon,
            "task_epsilon": self.task_epsilon,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReleaseTerms:
        target = data.get("target_range")
        spec = ReleaseSpec(
            task_type=data["task_type"],
            metric_names=tuple(data["metric_names"]),
            n_classes=data.get("n_classes"),
            target_range=(float(target[0]), float(target[1])) if target else None,
        )
        epsilon, delta = float(data["epsilon"]), float(data["delta"])
        return cls(
            spec=spec,
            epsilon=epsilon,
            delta=delta,
            rho=rho_for_epsilon(epsilon, delta),
            vendor_epsilon=float(data["vendor_epsilon"]),
            task_epsilon=float(data["task_epsilon"]),
        )


def _positive(privacy: Mapping[str, Any], name: str) -> float:
    value = privacy.get(name)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise DisclosureError(f"privacy.{name} must be a positive number")
    return float(value)


def release_terms(task: Mapping[str, Any], *, caps: LimitCaps) -> ReleaseTerms:
    """The job's release terms from its task spec, checked against the site's caps."""
    privacy = task.get("privacy")
    if not isinstance(privacy, Mapping):
        raise DisclosureError("the job carries no privacy terms; this site releases only noised statistics")
    epsilon = _positive(privacy, "epsilon_per_release")
    delta = _positive(privacy, "delta")
    vendor_epsilon = _positive(privacy, "vendor_epsilon")
    task_epsilon = _positive(privacy, "task_epsilon")
    if not delta < 1:
        raise DisclosureError("privacy.delta must be below 1")
    if epsilon > caps.max_epsilon_per_release:
        raise DisclosureError(
            f"the task asks epsilon {epsilon:g} per release; this site allows at most {caps.max_epsilon_per_release:g}"
        )
    try:
        spec = ReleaseSpec.for_task(
            task_type=str(task.get("task_type")),
            metric_names=metric_names(task.get("metrics") or []),
            input_spec=task.get("input_spec") if isinstance(task.get("input_spec"), Mapping) else None,
        )
    except StatisticsError as exc:
        raise DisclosureError(str(exc)) from None
    return ReleaseTerms(
        spec=spec,
        epsilon=epsilon,
        delta=delta,
        rho=rho_for_epsilon(epsilon, delta),
        vendor_epsilon=min(vendor_epsilon, caps.max_vendor_epsilon),
        task_epsilon=min(task_epsilon, caps.max_task_epsilon),
    )


def fallback_predictions(spec: ReleaseSpec, n_rows: int) -> np.ndarray:
    """The prediction released in place of a model that failed after seeing data: uniform class
    probabilities, or the middle of the target range. It depends on nothing the model did."""
    if spec.task_type in CLASSIFICATION:
        k = spec.n_classes or 2
        return np.full((n_rows, k), 1.0 / k)
    assert spec.target_range is not None
    lo, hi = spec.target_range
    return np.full(n_rows, (lo + hi) / 2.0)
