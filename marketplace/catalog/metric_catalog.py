"""The metrics a task may ask for, with their direction (same names as evaluator/metrics.py)."""

from dataclasses import dataclass

HIGHER = "higher"
LOWER = "lower"

CLASSIFICATION = frozenset({"binary_classification", "multiclass_classification"})
REGRESSION = frozenset({"regression"})


@dataclass(frozen=True)
class MetricInfo:
    name: str
    direction: str
    task_types: frozenset[str]


METRICS: dict[str, MetricInfo] = {
    info.name: info
    for info in [
        MetricInfo("accuracy", HIGHER, CLASSIFICATION),
        MetricInfo("balanced_accuracy", HIGHER, CLASSIFICATION),
        MetricInfo("roc_auc", HIGHER, CLASSIFICATION),
        MetricInfo("f1", HIGHER, CLASSIFICATION),
        MetricInfo("log_loss", LOWER, CLASSIFICATION),
        MetricInfo("mean_squared_error", LOWER, REGRESSION),
        MetricInfo("mean_absolute_error", LOWER, REGRESSION),
        MetricInfo("r2", HIGHER, REGRESSION),
    ]
}


def metric_direction(name: str) -> str:
    return METRICS[name].direction
