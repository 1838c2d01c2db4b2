"""Disclosure policy applied on the site before anything leaves: pure functions.

Only the task's listed metrics leave, each rounded to the task's decimals. The site caps the
decimals (``limits.max_decimals``): a hub asking for more precision gets the site's cap, because
every extra digit is a channel from private rows to the vendor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_DECIMALS = 4


class DisclosureError(ValueError):
    """The task's metric policy is malformed (``policy_violation``)."""

    reason = "policy_violation"


def metric_policy(task_metrics: Iterable[Mapping[str, Any]], *, max_decimals: int) -> dict[str, int]:
    """``{name: decimals}`` from the task spec's ``metrics`` list, decimals capped by the site."""
    policy: dict[str, int] = {}
    for item in task_metrics:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise DisclosureError("each task metric needs a name")
        decimals = item.get("decimals", DEFAULT_DECIMALS)
        if isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0:
            raise DisclosureError(f"metric {item['name']!r}: decimals must be a non-negative integer")
        if item["name"] in policy:
            raise DisclosureError(f"metric {item['name']!r} is listed twice")
        policy[item["name"]] = min(decimals, max_decimals)
    if not policy:
        raise DisclosureError("the task lists no metrics")
    return policy


def round_metric(value: float, decimals: int) -> float:
    if not math.isfinite(value):
        raise DisclosureError("a metric value is not finite")
    rounded = round(float(value), decimals)
    return rounded + 0.0  # no "-0.0" on the wire


def disclose(metrics: Mapping[str, float], policy: Mapping[str, int]) -> dict[str, float]:
    """What may leave: the policy's metrics only, rounded. A listed metric missing is an error."""
    released: dict[str, float] = {}
    for name, decimals in policy.items():
        if name not in metrics:
            raise DisclosureError(f"metric {name!r} was not computed")
        released[name] = round_metric(metrics[name], decimals)
    return released
