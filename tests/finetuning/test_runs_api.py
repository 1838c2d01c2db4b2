"""Run requests, the owner's decision, permissions, privacy limits, and the plain (no secure
aggregation) path with robust rules."""

import io
import zipfile
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from evaluator.federated.accounting import PrivacyLedger
from marketplace.audit.models import AuditEvent
from marketplace.catalog.services import task_update
from marketplace.finetuning.models import FineTuningRun, ProtocolMessage, RoundRecord
from marketplace.finetuning.offsets import layout_of, offset_from_bytes
from marketplace.finetuning.rounds import runs_advance_due
from marketplace.jobs.models import Job
from tests.conftest import make_site, make_task
from tests.finetuning.conftest import (
    LAYOUT,
    SimSite,
    make_parent,
    request_run,
    secagg_round,
    sites_for,
    start_run,
    updates_for,
)
from tests.hub.helpers import error_code


def offset_of(run):
    with run.offset.open("rb") as f:
        return offset_from_bytes(f.read(), layout_of(LAYOUT))


def timeout():
    return runs_advance_due(now=timezone.now() + timedelta(hours=1))


# --------------------------------------------------------------------------- requests


def test_secure_aggregation_with_two_sites_is_refused(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites_for(owner, fl_task, 2)
    response = request_run(vendor, parent)
    assert response.status_code == 409
    assert error_code(response) == "secure_aggregation_needs_3_sites"
    assert "at least 3 sites" in response.json()["error"]["message"]
    assert not FineTuningRun.objects.exists()


@pytest.mark.parametrize(
    ("setup", "code", "http"),
    [
        ("not_allowed", "fine_tuning_not_allowed", 409),
        ("sklearn", "not_trainable", 400),
        ("not_scored", "not_scored", 409),
        ("bad_strategy_params", "invalid_run", 400),
        ("min_sites", "too_few_sites", 409),
    ],
)
def test_run_requests_that_are_refused(owner, vendor, setup, code, http):
    task = make_task(owner, fine_tuning_allowed=setup != "not_allowed")
    sites_for(owner, task, 3)
    fmt = "sklearn" if setup == "sklearn" else "torchscript"
    parent = make_parent(vendor, task, fmt=fmt, status="evaluating" if setup == "not_scored" else "scored")
    extra = {}
    if setup == "bad_strategy_params":
        extra = {"strategy": "fedavg", "strategy_params": {"eta": 0.1}}
    if setup == "min_sites":
        extra = {"min_sites": 4}
    response = request_run(vendor, parent, **extra)
    assert response.status_code == http, response.content
    assert error_code(response) == code


def test_epsilon_cap_that_allows_no_round_is_refused(owner, vendor):
    task = make_task(owner, fine_tuning_allowed=True, fl_noise_multiplier=0.5, fl_epsilon_cap=0.01)
    sites_for(owner, task, 3)
    response = request_run(vendor, make_parent(vendor, task))
    assert response.status_code == 409 and error_code(response) == "epsilon_cap_too_low"


def test_task_policy_rejects_robust_rules_with_secure_aggregation(owner):
    response = owner.client.post(
        "/api/v1/tasks",
        {"title": "t", "task_type": "binary_classification", "input_spec": {"n_features": 3},
         "metrics": [{"name": "accuracy"}], "primary_metric": "accuracy", "fl_robust_rule": "median"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400 and error_code(response) == "invalid_spec"


# --------------------------------------------------------------------------- permissions


def test_other_organizations_and_sites_get_404(owner, other_owner, vendor, second_vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    stranger_site = SimSite(make_site(other_owner, "elsewhere"))
    for persona in (second_vendor, other_owner):
        assert persona.client.get(f"/api/v1/finetuning-runs/{run_id}").status_code == 404
        assert persona.client.post(f"/api/v1/finetuning-runs/{run_id}/stop").status_code == 404
        assert persona.client.get(f"/api/v1/finetuning-runs/{run_id}/model").status_code == 404
        assert persona.client.get("/api/v1/finetuning-runs").json()["count"] == 0
    assert second_vendor.client.post(f"/api/v1/finetuning-runs/{run_id}/approve").status_code == 404
    assert vendor.client.post(f"/api/v1/finetuning-runs/{run_id}/approve").status_code == 404  # not the owner
    assert (
        owner.client.get(f"/api/v1/finetuning-runs/{run_id}/model").status_code == 404
    )  # owners never get weights
    assert request_run(second_vendor, parent).status_code == 404  # not its submission
    assert stranger_site.api.get(f"/api/v1/agent/runs/{run_id}/state").status_code == 404
    assert stranger_site.api.get(f"/api/v1/agent/runs/{run_id}/rounds/0/offset").status_code == 404
    keys = {"keys": {"mask_public": "AQ==", "enc_public": "Ag=="}}
    stranger_site.post(f"{run_id}/rounds/0/keys", keys, expect=404)
    stranger_site.post(f"{run_id}/layout", {"layout": LAYOUT}, expect=404)
    # People cannot use agent endpoints, and sites cannot use people's.
    assert vendor.client.get(f"/api/v1/agent/runs/{run_id}/state").status_code in (401, 403)
    assert sites[0].api.get(f"/api/v1/finetuning-runs/{run_id}").status_code in (401, 403)


def test_a_post_needs_the_lease_of_the_sites_train_job(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    intruder = SimSite(sites[0].handle, agent_id="agent-2")
    response = intruder.post(
        f"{run_id}/rounds/0/keys", {"keys": {"mask_public": "AQ==", "enc_public": "Ag=="}}, expect=409
    )
    assert error_code(response) == "lease_lost"


def test_owner_sees_per_site_curves_and_the_vendor_only_aggregates(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=2)
    secagg_round(run_id, sites, updates_for(3))
    vendor_view = vendor.client.get(f"/api/v1/finetuning-runs/{run_id}").json()
    owner_view = owner.client.get(f"/api/v1/finetuning-runs/{run_id}").json()
    assert vendor_view["rounds_detail"][0]["per_site"] is None
    assert vendor_view["rounds_detail"][0]["train_loss"] == pytest.approx(0.5)
    assert len(owner_view["rounds_detail"][0]["per_site"]) == 3
    assert vendor_view["n_participants"] == 3 and vendor_view["current_round"] == 1


def test_reject_and_stop(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    first = request_run(vendor, parent).json()["id"]
    assert owner.client.post(f"/api/v1/finetuning-runs/{first}/reject").json()["status"] == "rejected"
    assert not Job.objects.filter(kind="train").exists()
    assert error_code(owner.client.post(f"/api/v1/finetuning-runs/{first}/approve")) == "invalid_state"
    second = start_run(owner, vendor, parent, sites, rounds=3)
    for site in sites:
        site.post_keys(second)
    stopped = vendor.client.post(f"/api/v1/finetuning-runs/{second}/stop").json()
    assert stopped["status"] == "stopped" and stopped["result_id"] is None
    assert not ProtocolMessage.objects.exists()
    assert set(
        Job.objects.filter(kind="train", fl_participant__run_id=second).values_list("status", flat=True)
    ) == {"failed"}
    assert AuditEvent.objects.filter(action="finetuning.stopped", object_id=str(second)).exists()


def test_vendor_downloads_the_fine_tuned_model_as_parent_plus_offset(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    assert error_code(vendor.client.get(f"/api/v1/finetuning-runs/{run_id}/model")) == "no_model"
    secagg_round(run_id, sites, updates_for(3))
    response = vendor.client.get(f"/api/v1/finetuning-runs/{run_id}/model")
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert sorted(archive.namelist()) == ["manifest.json", "model.pt", "weights_offset.safetensors"]
    with parent.artifact.open("rb") as f:
        assert archive.read("model.pt") == f.read()
    offset = offset_from_bytes(archive.read("weights_offset.safetensors"), layout_of(LAYOUT))
    assert np.allclose(offset, offset_of(FineTuningRun.objects.get(id=run_id)))


# --------------------------------------------------------------------------- privacy budget


def test_epsilon_cap_stops_the_run_before_it_would_be_exceeded(owner, vendor):
    task = make_task(owner, fine_tuning_allowed=True, fl_privacy_unit="site", fl_noise_multiplier=2.0,
                     fl_epsilon_cap=3.0)  # fmt: skip
    sites = sites_for(owner, task, 3)
    parent = make_parent(vendor, task)
    run_id = start_run(owner, vendor, parent, sites, rounds=50)
    run = FineTuningRun.objects.get(id=run_id)
    # Worst case per round: 2 of 3 sites contribute, z * sqrt(2/3).
    z_worst = 2.0 * (2 / 3) ** 0.5
    allowed = PrivacyLedger(delta=1e-5, noise_multiplier=z_worst).rounds_within(3.0)
    assert 0 < allowed < 50
    for _ in range(allowed):
        secagg_round(run_id, sites, updates_for(3))
    run.refresh_from_db()
    assert run.status == "completed" and run.status_reason == "epsilon_cap"
    assert run.rounds_completed == allowed and run.epsilon_spent <= 3.0
    assert run.result is not None
    epsilons = [r.epsilon for r in RoundRecord.objects.filter(run=run)]
    assert epsilons == sorted(epsilons) and epsilons[-1] == run.epsilon_spent


# --------------------------------------------------------------------------- without secure aggregation


def test_plain_median_run_resists_one_poisoned_site(owner, vendor):
    task = make_task(owner, fine_tuning_allowed=True, fl_secure_aggregation=False, fl_robust_rule="median")
    sites = sites_for(owner, task, 3)
    parent = make_parent(vendor, task)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    honest = [np.full(12, 0.005), np.full(12, 0.006)]
    # within the update bound (norm 0.048 of 0.055 at the default lr 0.05): larger ones are refused outright
    poisoned = np.full(12, 0.014)
    for site, update in zip(sites, [*honest, poisoned], strict=True):
        assert site.post_update(run_id, update).status_code == 200
    run = FineTuningRun.objects.get(id=run_id)
    assert run.status == "completed"
    assert np.allclose(offset_of(run), 0.006, atol=1e-7)  # the median of 0.005, 0.006, 0.014
    assert not ProtocolMessage.objects.exists()  # individual updates are gone once aggregated


def test_plain_norm_bound_caps_an_oversized_update(owner, vendor):
    task = make_task(
        owner, fine_tuning_allowed=True, fl_secure_aggregation=False, fl_robust_rule="norm_bound"
    )
    sites = sites_for(owner, task, 3)
    run_id = start_run(owner, vendor, make_parent(vendor, task), sites, rounds=1)
    for site, value in zip(sites, [0.01, 0.01, 100.0], strict=True):
        response = site.post_update(run_id, np.full(12, value))
        assert response.status_code == (400 if value == 100.0 else 200)
    assert error_code(response) == "update_out_of_bounds"  # the hub refuses it before any rule
    timeout()
    d = offset_of(FineTuningRun.objects.get(id=run_id))
    assert np.linalg.norm(d) <= 2 * np.linalg.norm(np.full(12, 0.01)) / 2 + 1e-5


def test_plain_run_with_two_sites_and_a_timeout(owner, vendor):
    task = make_task(owner, fine_tuning_allowed=True, fl_secure_aggregation=False)
    sites = sites_for(owner, task, 2)
    run_id = start_run(owner, vendor, make_parent(vendor, task), sites, rounds=2)
    sites[0].post_update(run_id, np.full(12, 0.01))
    timeout()
    run = FineTuningRun.objects.get(id=run_id)
    assert run.current_round == 1 and np.allclose(offset_of(run), 0.01)
    assert RoundRecord.objects.get(run=run, round=0).n_contributors == 1


def test_fedadam_keeps_its_state_between_rounds(owner, vendor):
    task = make_task(owner, fine_tuning_allowed=True, fl_secure_aggregation=False, fl_clip_norm=5.0,
                     fl_privacy_unit="none")  # fmt: skip
    sites = sites_for(owner, task, 2)
    run_id = start_run(owner, vendor, make_parent(vendor, task), sites, rounds=3, strategy="fedadam",
                       strategy_params={"eta": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.001})  # fmt: skip
    from evaluator.federated.strategies import get_strategy

    reference = get_strategy("fedadam", learning_rate=0.05, eta=0.1, beta1=0.9, beta2=0.99, tau=0.001)
    expected = np.zeros(12)
    for r in range(3):
        updates = [np.full(12, 0.1 * (r + 1)), np.full(12, 0.3)]
        for site, update in zip(sites, updates, strict=True):
            site.post_update(run_id, update)
        expected = reference.aggregate(expected, np.mean(np.asarray(updates, dtype=np.float32), axis=0), 2)
        run = FineTuningRun.objects.get(id=run_id)
        if r < 2:
            assert run.strategy_state and np.allclose(offset_of(run), expected, atol=1e-5)
    with run.result.weights_offset.open("rb") as f:
        assert np.allclose(offset_from_bytes(f.read(), layout_of(LAYOUT)), expected, atol=1e-5)


def test_task_edits_after_approval_do_not_change_a_run(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    before = FineTuningRun.objects.get(id=run_id).clip_norm  # record-level: derived from the DP settings
    task_update(task=fl_task, actor=owner.user, changes={"fl_clip_norm": before + 5.0})
    assert FineTuningRun.objects.get(id=run_id).clip_norm == before
    assert sites[0].state(run_id)["round_config"]["clip_norm"] == before


def test_the_beat_schedule_runs_the_advance_task(owner, vendor, fl_task, settings):
    from marketplace.finetuning.tasks import finetuning_runs_advance_task

    entry = settings.CELERY_BEAT_SCHEDULE["advance-finetuning-runs"]
    assert entry["task"] == finetuning_runs_advance_task.name
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=1, round_timeout_seconds=10)
    FineTuningRun.objects.filter(id=run_id).update(phase_started_at=timezone.now() - timedelta(seconds=11))
    assert finetuning_runs_advance_task.apply().get() == 1
    run = FineTuningRun.objects.get(id=run_id)
    assert (run.phase, run.attempt, run.failed_rounds) == ("keys", 1, 1)  # nobody advertised keys in time


def test_run_list_query_count_does_not_grow_with_runs(owner, vendor, fl_task, django_assert_num_queries):
    parent = make_parent(vendor, fl_task)
    sites_for(owner, fl_task, 3)
    request_run(vendor, parent)
    with django_assert_num_queries(3):  # organizations, count, page
        assert vendor.client.get("/api/v1/finetuning-runs").json()["count"] == 1
    for _ in range(4):
        request_run(vendor, parent)
    with django_assert_num_queries(3):
        assert vendor.client.get("/api/v1/finetuning-runs").json()["count"] == 5


# --------------------------------------------------------------------------- bounded updates, one epsilon


@pytest.mark.parametrize("value", [3e38, 1.0])
def test_an_update_above_the_clip_bound_is_refused(owner, vendor, value):
    task = make_task(owner, fine_tuning_allowed=True, fl_secure_aggregation=False)
    sites = sites_for(owner, task, 3)
    run_id = start_run(owner, vendor, make_parent(vendor, task), sites, rounds=1)
    clip = FineTuningRun.objects.get(id=run_id).clip_norm
    update = np.full(12, min(value * clip, 3e38), dtype=np.float32)  # norm 1e39 or 3.46 C > C
    response = sites[0].post_update(run_id, update)
    assert response.status_code == 400 and error_code(response) == "update_out_of_bounds"
    assert not ProtocolMessage.objects.filter(kind="update").exists()


@pytest.mark.parametrize("n_examples", [2**63, 2**62, 100_000_001])
def test_an_absurd_example_count_is_refused(owner, vendor, n_examples):
    task = make_task(owner, fine_tuning_allowed=True, fl_secure_aggregation=False)
    sites = sites_for(owner, task, 3)
    run_id = start_run(owner, vendor, make_parent(vendor, task), sites, rounds=1)
    response = sites[0].post_update(run_id, np.full(12, 0.01), n=n_examples)  # only the count is wrong
    assert response.status_code == 400 and error_code(response) in ("invalid_message", "parse_error")
    assert not ProtocolMessage.objects.filter(kind="update").exists()


def test_a_secure_sum_above_n_times_the_clip_bound_fails_the_round(owner, vendor, fl_task):
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, make_parent(vendor, fl_task), sites, rounds=2)
    clip = FineTuningRun.objects.get(id=run_id).clip_norm
    hostile = np.full(12, clip)  # norm 3.46 C: its site skipped the clip; the hub cannot see it alone
    secagg_round(run_id, sites, [np.full(12, 0.2 * clip), np.full(12, 0.2 * clip), hostile])  # sum 4.8 C > 3 C
    record = RoundRecord.objects.get(run_id=run_id, round=0, attempt=0)
    assert record.status == "failed" and record.failure_reason == "sum_out_of_bounds"
    assert np.allclose(offset_of(FineTuningRun.objects.get(id=run_id)), 0.0)


def test_record_level_run_is_the_default_and_hub_and_sites_share_one_epsilon(owner, vendor, fl_task):
    from evaluator.federated.site import parse_run
    from marketplace.jobs.models import Job

    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, make_parent(vendor, fl_task), sites, rounds=3)
    run = FineTuningRun.objects.get(id=run_id)
    from evaluator.privacy.calibration import noise_multiplier_for
    from marketplace.finetuning.defaults import ROUND_EPSILON_CAP

    sigma = max(noise_multiplier_for(epsilon=8.0, rounds=3, sample_rate=1.0, local_epochs=1, delta=1e-5),
                noise_multiplier_for(epsilon=ROUND_EPSILON_CAP, rounds=1, sample_rate=1.0, local_epochs=1,
                                     delta=1e-5))  # the per-round cap (marketplace.finetuning.defaults)
    assert run.privacy_unit == "record" and run.epsilon_cap == 8.0 and run.noise_multiplier == sigma  # calibrated
    assert run.dp_sample_rate == 1.0 and run.hub_defaults["batch_size"]["value"] == 80  # smallest fit rows
    from marketplace.finetuning.selectors import run_payload_for_job

    spec = parse_run(run_payload_for_job(job=Job.objects.get(fl_participant__run=run, fl_participant__number=1)))
    site_ledger = spec.new_privacy_ledger(0)
    for _ in range(2):
        secagg_round(run_id, sites, updates_for(3))
        site_ledger.record_round()
    run.refresh_from_db()
    assert run.rounds_completed == 2
    assert run.epsilon_spent == pytest.approx(site_ledger.epsilon, rel=1e-12)  # not 3x: sites are parallel
    assert spec.dp["steps"] == run.dp_steps_per_round and spec.noise_multiplier == 0.0


def test_the_api_names_the_guarantee_and_the_same_epsilon_estimate_the_owner_sees(owner, vendor, fl_task):
    from django.urls import reverse

    sites_for(owner, fl_task, 3)
    run_id = request_run(vendor, make_parent(vendor, fl_task), rounds=5).json()["id"]
    privacy = vendor.client.get(f"/api/v1/finetuning-runs/{run_id}").json()["privacy"]
    assert privacy["unit"] == "record" and "exact Gaussian DP" in privacy["accountant"]  # q = 1 by default
    assert "not added" in privacy["composition"] and privacy["epsilon_cap"] == 8.0
    from evaluator.federated.accounting import record_level_epsilon
    from evaluator.privacy.calibration import noise_multiplier_for
    from marketplace.finetuning.defaults import ROUND_EPSILON_CAP

    sigma = max(noise_multiplier_for(epsilon=8.0, rounds=5, sample_rate=1.0, local_epochs=1, delta=1e-5),
                noise_multiplier_for(epsilon=ROUND_EPSILON_CAP, rounds=1, sample_rate=1.0, local_epochs=1,
                                     delta=1e-5))  # the per-round cap (marketplace.finetuning.defaults)
    expected = record_level_epsilon(rounds=5, noise_multiplier=sigma, sample_rate=1.0, local_epochs=1, delta=1e-5)
    assert privacy["epsilon_planned"] == pytest.approx(expected, abs=1e-4)
    page = _browser(owner).get(reverse("portal:approvals")).content.decode()
    assert f"{expected:.2f} per site" in page and 'data-dp-unit="record"' in page


def test_an_opted_out_run_warns_the_owner_and_the_vendor(owner, vendor):
    from django.urls import reverse

    task = make_task(owner, fine_tuning_allowed=True, fl_privacy_unit="none", fl_noise_multiplier=0.0)
    sites_for(owner, task, 3)
    run_id = request_run(vendor, make_parent(vendor, task)).json()["id"]
    privacy = vendor.client.get(f"/api/v1/finetuning-runs/{run_id}").json()["privacy"]
    assert privacy["unit"] == "none" and privacy["epsilon_planned"] is None and "opted out" in privacy["warning"]
    assert "data-dp-warning" in _browser(owner).get(reverse("portal:approvals")).content.decode()
    assert "data-dp-warning" in _browser(vendor).get(reverse("portal:run", args=[run_id])).content.decode()


def _browser(persona):
    from django.test import Client

    client = Client()
    client.force_login(persona.user)
    return client


def test_record_level_dp_refuses_a_python_package_parent(owner, vendor, fl_task):
    sites_for(owner, fl_task, 3)
    response = request_run(vendor, make_parent(vendor, fl_task, fmt="python_package"))
    assert response.status_code == 400 and error_code(response) == "not_trainable"


def test_fedprox_without_mu_sends_the_default_it_shows(owner, vendor, fl_task):
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, make_parent(vendor, fl_task), sites, strategy="fedprox")
    assert sites[0].state(run_id)["round_config"]["proximal_mu"] == 0.01
    body = vendor.client.get(f"/api/v1/finetuning-runs/{run_id}").json()
    assert body["strategy_defaults"] == {"server_learning_rate": 1.0, "proximal_mu": 0.01}
