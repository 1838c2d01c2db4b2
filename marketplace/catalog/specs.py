"""Validation of a task's specification and policy: pure functions, no database."""

import math
from typing import Any, NoReturn

from marketplace.catalog.metric_catalog import METRICS
from marketplace.core.errors import DomainError

# The hub's own ceilings; each site applies its own (lower or equal) caps on top.
MAX_MEMORY_MB = 16384
MAX_CPUS = 8.0
MAX_TIMEOUT_SECONDS = 6 * 3600
MAX_OUTPUT_MB = 1024
MAX_DECIMALS = 6

TASK_TYPES = {"binary_classification", "multiclass_classification", "regression"}


def _fail(field: str, message: str) -> NoReturn:
    raise DomainError(message, code="invalid_spec", details={field: [message]})


def validate_input_spec(task_type: str, input_spec: Any) -> dict:
    if task_type not in TASK_TYPES:
        _fail("task_type", f"Unknown task type {task_type!r}.")
    if not isinstance(input_spec, dict):
        _fail("input_spec", "input_spec must be an object.")
    n_features = input_spec.get("n_features")
    if not isinstance(n_features, int) or isinstance(n_features, bool) or not 1 <= n_features <= 100_000:
        _fail("input_spec", "input_spec.n_features must be an integer between 1 and 100000.")
    dtype = input_spec.get("dtype", "float32")
    if dtype not in {"float32", "float64"}:
        _fail("input_spec", "input_spec.dtype must be float32 or float64.")
    spec = {"n_features": n_features, "dtype": dtype}
    if task_type == "binary_classification":
        if input_spec.get("n_classes", 2) != 2:
            _fail("input_spec", "A binary classification task has n_classes = 2.")
        spec["n_classes"] = 2
    elif task_type == "multiclass_classification":
        n_classes = input_spec.get("n_classes")
        if not isinstance(n_classes, int) or isinstance(n_classes, bool) or not 3 <= n_classes <= 10_000:
            _fail("input_spec", "A multiclass task needs input_spec.n_classes between 3 and 10000.")
        spec["n_classes"] = n_classes
    else:
        if "n_classes" in input_spec:
            _fail("input_spec", "A regression task has no n_classes.")
        spec["target_range"] = _target_range(input_spec.get("target_range"))
    return spec


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _target_range(value: Any) -> list[float]:
    """A regression task's [lo, hi]: errors and targets are clipped to it, which bounds what one
    row can change in a release (docs/disclosure.md)."""
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(_number(v) for v in value)):
        _fail("input_spec", "A regression task needs input_spec.target_range = [lo, hi], two finite numbers.")
    lo, hi = float(value[0]), float(value[1])
    if not lo < hi:
        _fail("input_spec", "input_spec.target_range must be [lo, hi] with lo < hi.")
    return [lo, hi]


def validate_metrics(task_type: str, metrics: Any, primary_metric: str) -> list[dict]:
    if not isinstance(metrics, list) or not metrics:
        _fail("metrics", "metrics must be a non-empty list.")
    cleaned: list[dict] = []
    seen: set[str] = set()
    for item in metrics:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            _fail("metrics", 'Each metric is an object like {"name": "roc_auc", "decimals": 4}.')
        name = item["name"]
        info = METRICS.get(name)
        if info is None:
            _fail("metrics", f"Unknown metric {name!r}; known: {', '.join(sorted(METRICS))}.")
        if task_type not in info.task_types:
            _fail("metrics", f"Metric {name!r} does not apply to a {task_type} task.")
        if name in seen:
            _fail("metrics", f"Metric {name!r} is listed twice.")
        decimals = item.get("decimals", 4)
        if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= MAX_DECIMALS:
            _fail("metrics", f"decimals must be an integer between 0 and {MAX_DECIMALS}.")
        seen.add(name)
        cleaned.append({"name": name, "decimals": decimals})
    if primary_metric not in seen:
        _fail("primary_metric", "primary_metric must be one of the task's metrics.")
    return cleaned


def validate_resource_limits(limits: Any) -> dict:
    if not isinstance(limits, dict):
        _fail("resource_limits", "resource_limits must be an object.")
    bounds = {
        "memory_mb": (64, MAX_MEMORY_MB, int),
        "cpus": (0.1, MAX_CPUS, float),
        "timeout_seconds": (5, MAX_TIMEOUT_SECONDS, int),
        "max_output_mb": (1, MAX_OUTPUT_MB, int),
    }
    unknown = set(limits) - set(bounds)
    if unknown:
        _fail("resource_limits", f"Unknown resource limits: {', '.join(sorted(unknown))}.")
    defaults = {"memory_mb": 1024, "cpus": 1.0, "timeout_seconds": 300, "max_output_mb": 64}
    cleaned: dict[str, Any] = {}
    for key, (low, high, kind) in bounds.items():
        value = limits.get(key, defaults[key])
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            _fail("resource_limits", f"resource_limits.{key} must be between {low} and {high}.")
        cleaned[key] = kind(value)
    return cleaned


def validate_policy(
    *,
    public_split_fraction: float,
    quota_per_day: int,
    quota_total: int | None,
    final_submissions: int = 2,
) -> None:
    if not 1 <= final_submissions <= 20:
        _fail("final_submissions", "final_submissions must be between 1 and 20.")
    if not 0.0 < public_split_fraction <= 1.0:
        _fail("public_split_fraction", "public_split_fraction must be in (0, 1].")
    if quota_per_day < 1:
        _fail("quota_per_day", "quota_per_day must be at least 1.")
    if quota_total is not None and quota_total < 1:
        _fail("quota_total", "quota_total must be at least 1 when set.")


MAX_DP_DELTA = 1e-3
MAX_EPSILON = 1000.0
MAX_RELEASE_DELAY_SECONDS = 7 * 24 * 3600


def validate_privacy(
    *,
    epsilon_per_release: float,
    delta: float,
    vendor_epsilon: float,
    task_epsilon: float,
    release_delay_seconds: int,
    ladder_threshold: float,
) -> None:
    """The task's differential-privacy policy for evaluation releases (docs/disclosure.md)."""
    for field, value in (
        ("dp_epsilon_per_release", epsilon_per_release),
        ("dp_vendor_epsilon", vendor_epsilon),
        ("dp_task_epsilon", task_epsilon),
    ):
        if not _number(value) or not 0 < value <= MAX_EPSILON:
            _fail(field, f"{field} must be a number in (0, {MAX_EPSILON:g}].")
    if not _number(delta) or not 0 < delta < MAX_DP_DELTA:
        _fail("dp_delta", f"dp_delta must be in (0, {MAX_DP_DELTA:g}).")
    if vendor_epsilon < epsilon_per_release:
        _fail("dp_vendor_epsilon", "dp_vendor_epsilon must be at least dp_epsilon_per_release.")
    if task_epsilon < vendor_epsilon:
        _fail("dp_task_epsilon", "dp_task_epsilon must be at least dp_vendor_epsilon.")
    if not isinstance(release_delay_seconds, int) or not 0 <= release_delay_seconds <= MAX_RELEASE_DELAY_SECONDS:
        _fail("release_delay_seconds", f"release_delay_seconds must be between 0 and {MAX_RELEASE_DELAY_SECONDS}.")
    if not _number(ladder_threshold) or not 0 <= ladder_threshold <= 1e6:
        _fail("ladder_threshold", "ladder_threshold must be a number >= 0.")


FL_ROBUST_RULES = {"mean", "median", "trimmed_mean", "norm_bound"}
FL_PRIVACY_UNITS = {"record", "site", "none"}


def validate_fl_policy(
    *,
    clip_norm: float,
    noise_multiplier: float | None,
    dp_delta: float,
    epsilon_cap: float | None,
    secure_aggregation: bool,
    robust_rule: str,
    quantization_bits: int,
    privacy_unit: str = "record",
    example_clip_norm: float = 1.0,
) -> None:
    """The task's federated fine-tuning privacy policy (docs/federated-protocol.md)."""
    if privacy_unit not in FL_PRIVACY_UNITS:
        _fail("fl_privacy_unit", "fl_privacy_unit must be record, site or none.")
    if not 0 < example_clip_norm <= 1e6:
        _fail("fl_example_clip_norm", "fl_example_clip_norm must be positive.")
    if not 0 < clip_norm <= 1e6:
        _fail("fl_clip_norm", "fl_clip_norm must be positive.")
    if noise_multiplier is not None and not 0 <= noise_multiplier <= 1e3:
        _fail("fl_noise_multiplier", "fl_noise_multiplier must be between 0 and 1000 (empty: from the epsilon cap).")
    if noise_multiplier is None and privacy_unit == "site":
        _fail("fl_noise_multiplier", "Site-level DP needs a noise multiplier (only record-level sigma is calibrated).")
    if noise_multiplier is None and epsilon_cap is None and privacy_unit == "record":
        _fail("fl_noise_multiplier", "Set a noise multiplier, or an epsilon cap to calibrate it from.")
    if not 0 < dp_delta < 1:
        _fail("fl_dp_delta", "fl_dp_delta must be in (0, 1).")
    if epsilon_cap is not None:
        if not epsilon_cap > 0:
            _fail("fl_epsilon_cap", "fl_epsilon_cap must be positive when set.")
        if noise_multiplier == 0 and privacy_unit != "none":
            _fail("fl_epsilon_cap", "An epsilon cap needs noise: set fl_noise_multiplier above 0.")
    if robust_rule not in FL_ROBUST_RULES:
        _fail("fl_robust_rule", f"fl_robust_rule must be one of {', '.join(sorted(FL_ROBUST_RULES))}.")
    if secure_aggregation and robust_rule != "mean":
        _fail("fl_robust_rule", "Robust rules need the individual updates: only 'mean' with secure aggregation.")
    if not 8 <= quantization_bits <= 30:
        _fail("fl_quantization_bits", "fl_quantization_bits must be between 8 and 30.")
