"""The metric registry against scikit-learn's own values; shared tests driven by the registry."""

import numpy as np
import pytest
from sklearn import metrics as skm

from evaluator.metrics import (
    REGISTRY,
    TASK_TYPES,
    InvalidPredictions,
    MetricError,
    class_probabilities,
    compute_metrics,
    get_metric,
)

RNG = np.random.default_rng(0)
N = 200


def _binary():
    y = RNG.integers(0, 2, N)
    p1 = np.clip(0.6 * y + 0.4 * RNG.random(N) - 0.1, 0, 1)
    return y, p1


def _multiclass(k=3):
    y = RNG.integers(0, k, N)
    logits = RNG.normal(size=(N, k)) + 2.0 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p.astype(np.float32)


def _regression():
    y = RNG.normal(size=N)
    return y, y + RNG.normal(scale=0.3, size=N)


# --- shared registry tests ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_metric_declares_direction_needs_and_task_types(name):
    m = REGISTRY[name]
    assert m.name == name
    assert m.direction in {"higher", "lower"}
    assert m.needs in {"labels", "probabilities", "values"}
    assert m.task_types and m.task_types <= set(TASK_TYPES)
    # scikit-learn naming: *_error / *_loss are lower-better
    if name.endswith(("_error", "_loss")):
        assert m.direction == "lower"


def test_registry_holds_exactly_the_api_metric_names():
    assert set(REGISTRY) == {
        "accuracy",
        "balanced_accuracy",
        "roc_auc",
        "f1",
        "log_loss",
        "mean_squared_error",
        "mean_absolute_error",
        "r2",
    }


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_perfect_prediction_scores_at_least_as_well_as_a_noisy_one(name):
    m = REGISTRY[name]
    task_type = sorted(m.task_types)[0]
    if task_type == "regression":
        y, noisy = _regression()
        perfect = y.copy()
    elif task_type == "binary_classification":
        y, noisy = _binary()
        perfect = np.where(y == 1, 0.99, 0.01)
    else:
        y, noisy = _multiclass()
        perfect = np.full((N, 3), 0.005)
        perfect[np.arange(N), y] = 0.99
    good = compute_metrics(task_type, [name], y, perfect)[name]
    bad = compute_metrics(task_type, [name], y, noisy)[name]
    assert good >= bad if m.direction == "higher" else good <= bad


# --- exact values against sklearn --------------------------------------------------------------


def test_binary_metrics_match_sklearn_with_one_probability_column():
    y, p1 = _binary()
    labels = (p1 > 0.5).astype(int)
    proba = np.stack([1 - p1, p1], axis=1)
    got = compute_metrics(
        "binary_classification",
        ["accuracy", "balanced_accuracy", "roc_auc", "f1", "log_loss"],
        y,
        p1.reshape(-1, 1),
    )
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, labels))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, labels))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    assert got["f1"] == pytest.approx(skm.f1_score(y, labels))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba))


def test_binary_two_columns_and_vector_give_the_same_metrics():
    y, p1 = _binary()
    names = ["accuracy", "roc_auc", "log_loss", "f1"]
    a = compute_metrics("binary_classification", names, y, np.stack([1 - p1, p1], axis=1))
    b = compute_metrics("binary_classification", names, y, p1)
    assert a == pytest.approx(b)


def test_binary_threshold_is_strictly_above_one_half():
    y = np.array([0, 1, 1, 0])
    p1 = np.array([0.5, 0.51, 0.5, 0.2])
    got = compute_metrics("binary_classification", ["accuracy"], y, p1)
    assert got["accuracy"] == pytest.approx(0.75)  # 0.5 -> class 0


def test_multiclass_metrics_match_sklearn():
    y, p = _multiclass(4)
    labels = p.argmax(axis=1)
    got = compute_metrics(
        "multiclass_classification",
        ["accuracy", "balanced_accuracy", "roc_auc", "f1", "log_loss"],
        y,
        p,
        n_classes=4,
    )
    p64 = p.astype(np.float64)
    p64 /= p64.sum(axis=1, keepdims=True)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, labels))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, labels))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p64, multi_class="ovr"))
    assert got["f1"] == pytest.approx(skm.f1_score(y, labels, average="macro"))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, p64))


def test_regression_metrics_match_sklearn_and_accept_a_column():
    y, v = _regression()
    got = compute_metrics(
        "regression", ["mean_squared_error", "mean_absolute_error", "r2"], y, v.reshape(-1, 1)
    )
    assert got["mean_squared_error"] == pytest.approx(skm.mean_squared_error(y, v))
    assert got["mean_absolute_error"] == pytest.approx(skm.mean_absolute_error(y, v))
    assert got["r2"] == pytest.approx(skm.r2_score(y, v))


def test_sample_weight_is_passed_to_sklearn():
    y, v = _regression()
    w = RNG.random(N)
    got = compute_metrics("regression", ["mean_absolute_error"], y, v, sample_weight=w)
    assert got["mean_absolute_error"] == pytest.approx(
        skm.mean_absolute_error(y, v, sample_weight=w)
    )


def test_metric_objects_follow_the_sklearn_call_convention():
    y, v = _regression()
    assert get_metric("r2")(y, v) == pytest.approx(skm.r2_score(y, v))


# --- refusals ----------------------------------------------------------------------------------


def test_unknown_metric_is_refused():
    with pytest.raises(MetricError):
        compute_metrics("regression", ["median_absolute_error"], [1.0], [1.0])


def test_metric_for_another_task_type_is_refused():
    with pytest.raises(MetricError):
        compute_metrics("regression", ["accuracy"], [1.0, 2.0], [1.0, 2.0])


def test_wrong_number_of_prediction_rows_is_invalid_output():
    y, p1 = _binary()
    with pytest.raises(InvalidPredictions) as exc:
        compute_metrics("binary_classification", ["accuracy"], y, p1[:-1])
    assert exc.value.reason == "invalid_output"


def test_probabilities_outside_zero_one_are_invalid():
    with pytest.raises(InvalidPredictions):
        class_probabilities(np.array([[1.5, -0.5]]), n_rows=1, n_classes=2)


def test_probability_rows_must_sum_to_one():
    with pytest.raises(InvalidPredictions):
        class_probabilities(np.array([[0.2, 0.2, 0.2]]), n_rows=1, n_classes=3)


def test_non_finite_predictions_are_invalid():
    with pytest.raises(InvalidPredictions):
        compute_metrics("regression", ["r2"], [1.0, 2.0], [1.0, np.nan])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_undefined_metric_raises_rather_than_releasing_nan():
    with pytest.raises(ValueError):
        compute_metrics("binary_classification", ["roc_auc"], [1, 1, 1], [0.2, 0.6, 0.9])
