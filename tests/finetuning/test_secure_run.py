"""A full run with secure aggregation, driven through the real API by simulated sites."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from evaluator.federated.updates import dequantize, quantization_error_bound
from marketplace.budgets.models import PrivacyCharge
from marketplace.egress.models import EgressRecord
from marketplace.finetuning.models import FineTuningRun, ProtocolMessage, RoundRecord
from marketplace.finetuning.offsets import layout_of, offset_from_bytes
from marketplace.finetuning.rounds import runs_advance_due
from marketplace.jobs.models import Job, JobStatus
from marketplace.submissions.models import SubmissionStatus
from tests.finetuning.conftest import LAYOUT, make_parent, secagg_round, sites_for, start_run, updates_for


def offset_of(run: FineTuningRun) -> np.ndarray:
    with run.offset.open("rb") as f:
        return offset_from_bytes(f.read(), layout_of(LAYOUT))


def timeout():
    return runs_advance_due(now=timezone.now() + timedelta(hours=1))


def test_three_site_secure_run_matches_fedavg_and_creates_the_fine_tuned_submission(
    owner, vendor, fl_task, django_capture_on_commit_callbacks
):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    # plain FedAvg (record-level runs default to server momentum 0.9: FedSGD recipe, issue 10)
    run_id = start_run(owner, vendor, parent, sites, rounds=2, strategy_params={"server_momentum": 0.0})
    run = FineTuningRun.objects.get(id=run_id)
    assert run.layout == LAYOUT and run.phase == "keys" and run.threshold == 2
    assert np.all(offset_of(run) == 0)
    cfg = sites[0].state(run_id)["round_config"]
    expected = np.zeros(12)
    for r in range(2):
        updates = updates_for(3, seed=r)
        if r == 1:
            with django_capture_on_commit_callbacks(execute=True):
                secagg_round(run_id, sites, updates)
        else:
            secagg_round(run_id, sites, updates)
        quantized_sum = sum(s.quantized.astype(np.int64) for s in sites)
        exact = dequantize(quantized_sum, clip_norm=cfg["quantization_range"], bits=cfg["quantization_bits"],
                           n_summed=3) / 3  # fmt: skip
        bound = (
            quantization_error_bound(
                clip_norm=cfg["quantization_range"], bits=cfg["quantization_bits"], n_summed=3
            )
            / 3
        )
        plain = np.mean(updates, axis=0)
        assert np.max(np.abs(exact - plain)) <= bound
        expected += exact
        run.refresh_from_db()
        if r == 0:
            assert run.current_round == 1 and run.phase == "keys"
            assert np.allclose(offset_of(run), expected, atol=1e-6)
        assert not ProtocolMessage.objects.filter(run=run).exists()
    run.refresh_from_db()
    assert run.status == "completed" and run.rounds_completed == 2
    records = list(RoundRecord.objects.filter(run=run))
    assert [(r.round, r.status, r.n_contributors) for r in records] == [
        (0, "aggregated", 3),
        (1, "aggregated", 3),
    ]
    assert records[0].train_loss == pytest.approx(0.5) and records[0].validation["accuracy"] == pytest.approx(
        0.7
    )
    child = run.result
    assert (
        child.parent_id == parent.id and child.is_fine_tuned and child.artifact.name == parent.artifact.name
    )
    with child.weights_offset.open("rb") as f:
        final = offset_from_bytes(f.read(), layout_of(LAYOUT))
    assert np.allclose(final, expected, atol=1e-6)
    # Dispatched like any upload: evaluation jobs at every site, carrying the offset.
    child.refresh_from_db()
    assert child.status == SubmissionStatus.EVALUATING
    assert Job.objects.filter(submission=child, kind="evaluate").count() == 3
    # Its evaluation is paid from the vendor's privacy budget like an upload's.
    assert PrivacyCharge.objects.get(submission=child, split="public").refunded is False
    assert set(Job.objects.filter(fl_participant__run=run).values_list("status", flat=True)) == {
        JobStatus.SUCCEEDED
    }
    claim = sites[0].api.post("/api/v1/agent/jobs/claim", {"agent_id": "agent-1"}).json()["job"]
    assert claim["submission"]["id"] == child.id and claim["run"] is None
    assert claim["submission"]["weights_offset"]["sha256"] == child.weights_offset_sha256
    offset = sites[0].api.get(f"/api/v1/agent/jobs/{claim['id']}/weights-offset")
    assert offset.status_code == 200
    # Two releases per site mirrored into the egress ledger.
    assert EgressRecord.objects.filter(kind="update", task=fl_task).count() == 6


def test_claim_payload_of_a_train_job(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    response = vendor.client.post(
        "/api/v1/finetuning-runs",
        {"submission": parent.id, "rounds": 4, "learning_rate": 0.05, "strategy": "fedprox",
         "strategy_params": {"proximal_mu": 0.1}},
        format="json",
    )  # fmt: skip
    run_id = response.json()["id"]
    owner.client.post(f"/api/v1/finetuning-runs/{run_id}/approve")
    job = sites[1].claim()
    run = job["run"]
    assert run["id"] == run_id and run["n_participants"] == 3 and run["threshold"] == 2
    assert run["strategy"] == "fedprox" and run["proximal_mu"] == 0.1 and run["secure_aggregation"] is True
    assert run["participant"] in {1, 2, 3} and run["quantization_bits"] == 20
    assert job["submission"]["id"] == parent.id


@pytest.mark.parametrize("dropped", [set(), {0}, {1}, {2}])
def test_three_sites_any_single_dropout_after_sharing_still_aggregates(owner, vendor, fl_task, dropped):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    updates = updates_for(3)
    secagg_round(run_id, sites, updates, drop=dropped, timeout=timeout)
    run = FineTuningRun.objects.get(id=run_id)
    assert run.status == "completed"
    survivors = [i for i in range(3) if i not in dropped]
    bits = run.quantization_bits
    from marketplace.finetuning.rounds import quantization_q

    q = quantization_q(run, 3)
    exact = dequantize(sum(sites[i].quantized.astype(np.int64) for i in survivors), clip_norm=q, bits=bits,
                       n_summed=len(survivors)) / len(survivors)  # fmt: skip
    assert np.allclose(offset_of(run), exact, atol=1e-6)
    assert RoundRecord.objects.get(run=run).n_contributors == len(survivors)


def _subsets(n, max_size):
    from itertools import combinations

    return [set(c) for k in range(max_size + 1) for c in combinations(range(n), k)]


@pytest.mark.parametrize(
    "dropped", _subsets(5, 2), ids=lambda s: "drop-" + ("".join(map(str, sorted(s))) or "none")
)
def test_five_sites_every_dropout_pattern_down_to_the_threshold_aggregates(owner, vendor, fl_task, dropped):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 5)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    updates = updates_for(5, seed=7)
    # Survivors beyond the threshold (3) may also stay silent at unmask.
    survivors = [i for i in range(5) if i not in dropped]
    silent = {survivors[-1]} if len(survivors) > 3 else set()
    secagg_round(run_id, sites, updates, drop=dropped, silent_unmask=silent, timeout=timeout)
    run = FineTuningRun.objects.get(id=run_id)
    assert run.status == "completed", run.status_reason
    from marketplace.finetuning.rounds import quantization_q

    exact = dequantize(sum(sites[i].quantized.astype(np.int64) for i in survivors), clip_norm=quantization_q(run, 5),
                       bits=run.quantization_bits, n_summed=len(survivors)) / len(survivors)  # fmt: skip
    assert np.allclose(offset_of(run), exact, atol=1e-6)


def test_too_few_survivors_fail_the_round_which_is_retried_once(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    updates = updates_for(3)
    for site in sites:
        site.post_keys(run_id)
    for site in sites:
        site.post_shares(run_id)
    assert sites[0].post_masked(run_id, updates[0]).status_code == 200
    timeout()  # only 1 of 3 masked inputs: below the threshold of 2
    run = FineTuningRun.objects.get(id=run_id)
    assert (run.status, run.current_round, run.attempt, run.phase, run.failed_rounds) == (
        "running",
        0,
        1,
        "keys",
        1,
    )
    failed = RoundRecord.objects.get(run=run)
    assert failed.status == "failed" and failed.failure_reason == "too_few_sites"
    assert not ProtocolMessage.objects.filter(run=run).exists()
    assert np.all(offset_of(run) == 0)  # D unchanged
    # The retry uses fresh keys under a new round id, and succeeds.
    assert sites[0].state(run_id)["round_config"]["secagg_round_id"].endswith("attempt-1")
    secagg_round(run_id, sites, updates)
    run.refresh_from_db()
    assert run.status == "completed"


def test_a_round_that_fails_twice_fails_the_run(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    sites[0].post_keys(run_id)
    timeout()  # 1 of 3 keys
    sites[0].post_keys(run_id)
    timeout()
    run = FineTuningRun.objects.get(id=run_id)
    assert run.status == "failed" and run.status_reason == "too_many_failed_rounds" and run.result is None
    assert set(Job.objects.filter(fl_participant__run=run).values_list("status", flat=True)) == {
        JobStatus.FAILED
    }
    assert sites[0].state(run_id)["status"] == "failed"


def test_the_hub_never_stores_an_unmasked_individual_update(owner, vendor, fl_task, settings):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    updates = updates_for(3)
    for site in sites:
        site.post_keys(run_id)
    for site in sites:
        site.post_shares(run_id)
    for i, site in enumerate(sites):
        assert site.post_masked(run_id, updates[i], seed=i).status_code == 200
        plain = [s.quantized for s in sites[: i + 1]]
        for message in ProtocolMessage.objects.filter(kind="masked"):
            stored = np.frombuffer(bytes(message.vector), dtype="<u4")
            for q in plain:
                # A masked vector looks uniform: it shares essentially no coordinate with any quantized update.
                assert np.sum(stored == q) <= 1
        for message in ProtocolMessage.objects.exclude(kind="masked"):
            assert message.vector is None
    # Files the hub wrote: the offset only (D_0 = 0 so far), never an update.
    for path in (settings.MEDIA_ROOT / "finetuning").rglob("*"):
        assert path.is_file() is False or path.name == "offset.safetensors"
    for site in sites:
        site.post_unmask(run_id)
    assert not ProtocolMessage.objects.exists()
    run = FineTuningRun.objects.get(id=run_id)
    for record in RoundRecord.objects.filter(run=run):
        assert "vector" not in str(record.per_site)


def test_a_repeated_post_is_a_no_op_and_a_different_one_is_refused(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    sites[0].post_keys(run_id)
    state = sites[0].state(run_id)
    assert state["done"] is True
    from tests.finetuning.conftest import _b64

    keys = sites[0].client_state.advertise()
    same = {"keys": {"mask_public": _b64(keys.mask_public), "enc_public": _b64(keys.enc_public)}}
    assert sites[0].post(f"{run_id}/rounds/0/keys", same).json()["created"] is False
    other = {"keys": {"mask_public": _b64(b"\x01" * 32), "enc_public": _b64(b"\x02" * 32)}}
    response = sites[0].post(f"{run_id}/rounds/0/keys", other, expect=409)
    assert response.json()["error"]["code"] == "already_posted"
    assert (
        sites[1].post(f"{run_id}/rounds/3/keys", other, expect=409).json()["error"]["code"] == "wrong_phase"
    )
    assert (
        sites[1].post(f"{run_id}/layout", {"layout": LAYOUT}, expect=409).json()["error"]["code"]
        == "wrong_phase"
    )


def test_the_beat_task_is_safe_to_run_twice(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, parent, sites, rounds=1)
    for site in sites:
        site.post_keys(run_id)
    sites[0].post_shares(run_id)
    sites[1].post_shares(run_id)
    assert runs_advance_due() == 0  # not due yet
    assert timeout() == 1
    assert runs_advance_due() == 0  # the next phase has just begun: a second beat changes nothing
    run = FineTuningRun.objects.get(id=run_id)
    assert run.phase == "masked" and run.phase_data["sharers"] == [1, 2]
    # The site that did not share gets no bundles and may not post a masked input.
    state = sites[2].state(run_id)
    assert state["bundles"] == []
    assert len(sites[0].state(run_id)["bundles"]) == 2


def test_layout_must_agree_across_sites(owner, vendor, fl_task):
    parent = make_parent(vendor, fl_task)
    sites = sites_for(owner, fl_task, 3)
    response = vendor.client.post("/api/v1/finetuning-runs", {"submission": parent.id, "rounds": 1,
                                  "learning_rate": 0.1}, format="json")  # fmt: skip
    run_id = response.json()["id"]
    owner.client.post(f"/api/v1/finetuning-runs/{run_id}/approve")
    for site in sites:
        site.claim()
    sites[0].post_layout(run_id)
    other = [["bias", [3], "<f4"], ["weight", [2, 5], "<f4"]]
    assert sites[1].post_layout(run_id, other, expect=409).json()["error"]["code"] == "layout_mismatch"
    bad = [["weight", [2, 5], "<f4"], ["bias", [2], "<f4"]]
    assert sites[1].post_layout(run_id, bad, expect=400).json()["error"]["code"] == "invalid_layout"
