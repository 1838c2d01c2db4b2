import math

import pytest

from evaluator.disclosure import DisclosureError, disclose, metric_policy, round_metric

TASK_METRICS = [
    {"name": "roc_auc", "direction": "higher", "decimals": 4},
    {"name": "accuracy", "direction": "higher", "decimals": 2},
]


def test_only_the_tasks_listed_metrics_leave():
    policy = metric_policy(TASK_METRICS, max_decimals=6)
    out = disclose({"roc_auc": 0.912345, "accuracy": 0.8765, "log_loss": 0.3}, policy)
    assert out == {"roc_auc": 0.9123, "accuracy": 0.88}
    assert "log_loss" not in out


def test_site_caps_the_decimals_a_hub_asks_for():
    policy = metric_policy([{"name": "r2", "decimals": 12}], max_decimals=3)
    assert policy == {"r2": 3}
    assert disclose({"r2": 0.123456789}, policy) == {"r2": 0.123}


def test_decimals_default_to_four():
    assert metric_policy([{"name": "r2"}], max_decimals=6) == {"r2": 4}


def test_zero_decimals_rounds_to_an_integer_valued_float():
    assert round_metric(12.6, 0) == 13.0


def test_negative_zero_is_not_released():
    value = round_metric(-0.00001, 2)
    assert value == 0.0 and math.copysign(1, value) == 1


def test_a_listed_metric_that_was_not_computed_is_an_error():
    with pytest.raises(DisclosureError):
        disclose({"accuracy": 0.5}, {"accuracy": 2, "roc_auc": 4})


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [{"decimals": 2}],
        [{"name": "r2", "decimals": -1}],
        [{"name": "r2", "decimals": 1.5}],
        [{"name": "r2", "decimals": True}],
        [{"name": "r2"}, {"name": "r2"}],
    ],
)
def test_malformed_metric_policy_is_a_policy_violation(bad):
    with pytest.raises(DisclosureError) as exc:
        metric_policy(bad, max_decimals=6)
    assert exc.value.reason == "policy_violation"


def test_non_finite_values_never_leave():
    with pytest.raises(DisclosureError):
        disclose({"r2": float("nan")}, {"r2": 2})
