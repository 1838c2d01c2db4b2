"""The release terms a site derives from a job's task, checked against its own caps."""

import numpy as np
import pytest

from evaluator.config import LimitCaps
from evaluator.disclosure import (
    DisclosureError,
    ReleaseTerms,
    fallback_predictions,
    metric_names,
    release_terms,
)
from evaluator.privacy.statistics import ReleaseSpec
from evaluator.privacy.zcdp import rho_for_epsilon

PRIVACY = {"epsilon_per_release": 1.0, "delta": 1e-6, "vendor_epsilon": 10.0, "task_epsilon": 20.0}


def _task(**overrides):
    task = {
        "task_type": "binary_classification",
        "input_spec": {"n_features": 5, "n_classes": 2},
        "metrics": [{"name": "roc_auc", "decimals": 4}, {"name": "accuracy", "decimals": 2}],
        "privacy": dict(PRIVACY),
    }
    task.update(overrides)
    return task


def test_the_rho_is_derived_at_the_site_from_epsilon_and_delta():
    terms = release_terms(_task(), caps=LimitCaps())
    assert terms.rho == rho_for_epsilon(1.0, 1e-6)
    assert terms.privacy() == {"mechanism": "gaussian", "rho": terms.rho, "epsilon": 1.0, "delta": 1e-6}
    assert terms.spec == ReleaseSpec.for_task(
        task_type="binary_classification", metric_names=["roc_auc", "accuracy"], input_spec={"n_classes": 2}
    )


def test_the_budgets_are_the_smaller_of_the_hubs_and_the_sites():
    caps = LimitCaps(max_vendor_epsilon=4.0, max_task_epsilon=50.0)
    terms = release_terms(_task(), caps=caps)
    assert (terms.vendor_epsilon, terms.task_epsilon) == (4.0, 20.0)
    assert terms.vendor_cap_rho == rho_for_epsilon(4.0, 1e-6)
    assert terms.task_cap_rho == rho_for_epsilon(20.0, 1e-6)


def test_a_hub_asking_more_epsilon_per_release_than_the_site_allows_is_refused():
    with pytest.raises(DisclosureError, match="at most 2") as exc:
        release_terms(_task(privacy={**PRIVACY, "epsilon_per_release": 3.0}), caps=LimitCaps())
    assert exc.value.reason == "policy_violation"


@pytest.mark.parametrize(
    "privacy",
    [
        None,
        {},
        {**PRIVACY, "delta": 0},
        {**PRIVACY, "delta": 1.5},
        {**PRIVACY, "epsilon_per_release": float("nan")},
        {**PRIVACY, "vendor_epsilon": -1},
        {**PRIVACY, "task_epsilon": True},
        {k: v for k, v in PRIVACY.items() if k != "vendor_epsilon"},
    ],
)
def test_a_job_without_sound_privacy_terms_is_refused(privacy):
    with pytest.raises(DisclosureError):
        release_terms(_task(privacy=privacy), caps=LimitCaps())


def test_a_regression_task_needs_its_target_range():
    regression = _task(task_type="regression", metrics=[{"name": "r2"}], input_spec={"n_features": 5})
    with pytest.raises(DisclosureError, match="target_range"):
        release_terms(regression, caps=LimitCaps())
    regression["input_spec"]["target_range"] = [0, 10]
    assert release_terms(regression, caps=LimitCaps()).spec.target_range == (0.0, 10.0)


@pytest.mark.parametrize("bad", [[], [{"decimals": 2}], [{"name": "r2"}, {"name": "r2"}], ["r2"]])
def test_malformed_metric_lists_are_a_policy_violation(bad):
    with pytest.raises(DisclosureError) as exc:
        metric_names(bad)
    assert exc.value.reason == "policy_violation"


def test_terms_survive_the_state_file():
    terms = release_terms(
        _task(task_type="regression", metrics=[{"name": "mean_squared_error"}], input_spec={"target_range": [-1, 3]}),
        caps=LimitCaps(max_vendor_epsilon=5.0),
    )
    assert ReleaseTerms.from_json(terms.to_json()) == terms


def test_the_fallback_prediction_is_uniform_or_the_middle_of_the_range():
    multiclass = ReleaseSpec(task_type="multiclass_classification", metric_names=("log_loss",), n_classes=4)
    assert np.array_equal(fallback_predictions(multiclass, 3), np.full((3, 4), 0.25))
    regression = ReleaseSpec(task_type="regression", metric_names=("r2",), target_range=(2.0, 6.0))
    assert np.array_equal(fallback_predictions(regression, 2), np.array([4.0, 4.0]))
