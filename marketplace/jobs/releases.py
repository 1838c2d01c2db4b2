"""Checks on what a site posts as a release (docs/disclosure.md, "forged values from a site").

The hub publishes what sites release, so it refuses anything no honest site could have sent:
statistics of unknown blocks or shapes, values that are not finite numbers or lie outside what
the shard's rows can give (beyond the noise), a row count that is not the shard's split, and a
mechanism or cost other than the task's. Every check derives what it expects from the task and
the shard alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluator.privacy.mechanism import noise_scales
from evaluator.privacy.statistics import (
    ReleaseSpec,
    StatisticsError,
    check_plausible,
    check_statistics,
    metrics_from_statistics,
)
from evaluator.splits import split_sizes
from marketplace.budgets.costs import release_cost
from marketplace.catalog.models import DataShard, Task
from marketplace.core.errors import DomainError

RELEASE_FIELDS = {"agent_id", "n_rows", "statistics", "privacy", "ledger"}
# Optional: the attempt the release belongs to (the claim's token), and what the site ran it with
# (the runner image's id and the keyed fingerprint of the data it verified). Neither depends on
# the model's output.
OPTIONAL_FIELDS = {"attempt", "runner"}
MECHANISM = "gaussian"
REL_TOLERANCE = 1e-9


class InvalidRelease(DomainError):
    code = "invalid_release"


RUNNER_IMAGE = re.compile(r"^sha256:[0-9a-f]{64}$")
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def runner_of(body: dict) -> dict[str, str]:
    """The optional ``runner`` receipt of a release: {"image": "sha256:<64 hex>", "data": <64 hex>}."""
    runner = body.get("runner") if isinstance(body, dict) else None
    if runner is None:
        return {"image": "", "data": ""}
    image, data = (runner.get("image"), runner.get("data")) if isinstance(runner, dict) else (None, None)
    if (
        set(runner) != {"image", "data"}
        or not isinstance(image, str) or not RUNNER_IMAGE.match(image)
        or not isinstance(data, str) or not FINGERPRINT.match(data)
    ):  # fmt: skip
        raise InvalidRelease(
            'runner must be {"image": "sha256:<64 hex>", "data": "<64 hex>"}.', code="invalid_runner"
        )
    return {"image": image, "data": data}


@dataclass(frozen=True)
class Release:
    statistics: dict[str, list]  # as posted (validated): what the hub stores
    parsed: dict[str, np.ndarray]
    n_rows: int
    metrics: dict[str, float]  # this site's metrics, computed from its statistics
    rho: float
    epsilon: float
    delta: float


def release_spec(task: Task) -> ReleaseSpec:
    return ReleaseSpec.for_task(
        task_type=task.task_type, metric_names=[m["name"] for m in task.metrics], input_spec=task.input_spec
    )


def split_rows(*, task: Task, shard: DataShard) -> tuple[int, int]:
    """(public, private) row counts of the shard, as its sites split them."""
    n = (shard.split_sizes or {}).get("test") or shard.row_count
    return split_sizes(int(n), public_fraction=task.public_split_fraction)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers_only(value: Any) -> bool:
    """Nested lists of finite numbers (no strings such as "NaN", no ints too large for a float)."""
    if isinstance(value, list):
        return all(_numbers_only(v) for v in value)
    if not _is_number(value):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _same(value: Any, expected: float) -> bool:
    return _is_number(value) and math.isfinite(value) and math.isclose(value, expected, rel_tol=REL_TOLERANCE)


def _check_cost(where: str, values: Any, *, rho: float, epsilon: float, delta: float) -> None:
    if not isinstance(values, dict):
        raise InvalidRelease(f"{where} must be an object.")
    for name, expected in (("rho", rho), ("epsilon", epsilon), ("delta", delta)):
        if not _same(values.get(name), expected):
            raise InvalidRelease(
                f"{where}.{name} must be the task's {name} ({expected!r}), got {values.get(name)!r}.",
                code="wrong_privacy",
            )


def release_check(*, task: Task, shard: DataShard | None, body: dict, private: bool) -> Release:
    """Parses a metrics post of ``shard``'s public (or private) split, or raises InvalidRelease."""
    if not isinstance(body, dict):
        raise InvalidRelease("The release must be an object.")
    unknown = set(body) - RELEASE_FIELDS - OPTIONAL_FIELDS
    missing = RELEASE_FIELDS - set(body)
    if unknown or missing:
        raise InvalidRelease(
            f"A release has exactly the fields {', '.join(sorted(RELEASE_FIELDS))}"
            + (f"; unknown: {', '.join(sorted(map(str, unknown)))}" if unknown else "")
            + (f"; missing: {', '.join(sorted(missing))}" if missing else "")
            + "."
        )
    if shard is None:
        raise InvalidRelease("This site holds no registered shard of the task.", code="no_shard")
    rho, epsilon, delta = release_cost(task)
    privacy = body["privacy"]
    if not isinstance(privacy, dict) or privacy.get("mechanism") != MECHANISM:
        raise InvalidRelease(f"privacy.mechanism must be {MECHANISM!r}.", code="wrong_privacy")
    _check_cost("privacy", privacy, rho=rho, epsilon=epsilon, delta=delta)
    _check_cost("ledger", body["ledger"], rho=rho, epsilon=epsilon, delta=delta)
    n_rows = body["n_rows"]
    public_rows, private_rows = split_rows(task=task, shard=shard)
    expected_rows = private_rows if private else public_rows
    if not isinstance(n_rows, int) or isinstance(n_rows, bool) or n_rows != expected_rows:
        split = "private" if private else "public"
        raise InvalidRelease(
            f"n_rows must be the shard's {split} row count ({expected_rows}), got {n_rows!r}.",
            code="wrong_n_rows",
        )
    statistics = body["statistics"]
    spec = release_spec(task)
    if not isinstance(statistics, dict) or not all(_numbers_only(v) for v in statistics.values()):
        raise InvalidRelease(
            "statistics must map each block to nested lists of numbers.", code="invalid_statistics"
        )
    try:
        parsed = check_statistics(spec, statistics)
        check_plausible(spec, parsed, n_rows=n_rows, noise=noise_scales(spec, rho))
        metrics = metrics_from_statistics(spec, parsed, n_rows)
    except StatisticsError as error:
        raise InvalidRelease(str(error), code="invalid_statistics") from None
    return Release(
        statistics={block: statistics[block] for block in spec.blocks},
        parsed=parsed,
        n_rows=n_rows,
        metrics=metrics,
        rho=rho,
        epsilon=epsilon,
        delta=delta,
    )
