"""The site agent's API (docs/site-agent-api.md): site tokens only, each site only its own jobs."""

import hashlib
import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from marketplace.accounts.services import personal_token_create
from marketplace.audit.models import AuditEvent
from marketplace.budgets.costs import release_cost
from marketplace.budgets.models import PrivacyCharge
from marketplace.catalog.models import DataShard
from marketplace.egress.models import EgressRecord
from marketplace.jobs.models import Job, JobStatus, Result
from marketplace.jobs.services import jobs_requeue_expired
from marketplace.sites.models import SiteToken
from tests.conftest import make_site, make_task, register_shard, upload
from tests.hub.helpers import claim, error_code, job_of, post_result, release_body, submit, with_receipt


@pytest.fixture
def running(vendor, site, open_task):
    """A submission whose job at site-a is running under agent-1."""
    submission = submit(vendor, open_task)
    job = claim(site)
    return submission, job


def test_heartbeat_records_the_agent(site):
    response = site.client.post("/api/v1/agent/heartbeat", {"agent_id": "pod-7", "capabilities": {"gpu": False}},
                                format="json")  # fmt: skip
    assert response.status_code == 200
    assert response.json()["site"] == {"id": site.site.id, "name": "site-a"}
    site.site.refresh_from_db()
    assert site.site.last_agent_id == "pod-7" and site.site.last_heartbeat_at is not None
    assert SiteToken.objects.get(site=site.site).last_used_at is not None


def test_personal_token_is_refused_on_agent_endpoints(owner, running):
    _, job = running
    _, raw = personal_token_create(user=owner.user, name="cli")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    for path, body in [
        ("heartbeat", {"agent_id": "a"}),
        ("jobs/claim", {"agent_id": "a"}),
        (f"jobs/{job['id']}/lease", {"agent_id": "agent-1"}),
    ]:
        response = client.post(f"/api/v1/agent/{path}", body)
        assert response.status_code == 401, path
        assert "error" in response.json()
    assert client.get(f"/api/v1/agent/jobs/{job['id']}/artifact").status_code == 401


def test_logged_in_person_is_refused_on_agent_endpoints(owner):
    response = owner.client.post("/api/v1/agent/jobs/claim", {"agent_id": "a"})
    assert response.status_code in (401, 403)


def test_anonymous_and_unknown_tokens_are_refused(db):
    assert APIClient().post("/api/v1/agent/jobs/claim", {"agent_id": "a"}).status_code in (401, 403)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer vbs_" + "x" * 43)
    assert client.post("/api/v1/agent/jobs/claim", {"agent_id": "a"}).status_code == 401


def test_revoked_site_token_is_refused(site):
    SiteToken.objects.filter(site=site.site).update(revoked_at=timezone.now())
    response = site.client.post("/api/v1/agent/jobs/claim", {"agent_id": "a"})
    assert response.status_code == 401
    assert error_code(response) == "authentication_failed"


def test_site_registers_and_updates_its_shard(site, owner):
    task = make_task(owner)
    body = {"task": task.id, "row_count": 120, "fingerprint": "c" * 64, "split_sizes": {"test": 120}}
    first = site.client.post("/api/v1/agent/shards", body, format="json")
    assert first.status_code == 201, first.content
    second = site.client.post("/api/v1/agent/shards", {**body, "row_count": 150}, format="json")
    assert second.status_code == 200
    assert DataShard.objects.get(task=task, site=site.site).row_count == 150
    actions = list(AuditEvent.objects.filter(actor_site=site.site).values_list("action", flat=True))
    assert "shard.registered" in actions and "shard.updated" in actions


def test_site_cannot_register_a_shard_for_another_owners_task(site, other_owner):
    task = make_task(other_owner)
    response = site.client.post("/api/v1/agent/shards", {"task": task.id, "row_count": 100, "fingerprint": "c" * 64},
                                format="json")  # fmt: skip
    assert response.status_code == 404
    assert not DataShard.objects.filter(task=task).exists()


@pytest.mark.parametrize(
    "body",
    [
        {"task": "x", "row_count": 100, "fingerprint": "c" * 64},
        {"task": None, "row_count": 100, "fingerprint": "c" * 64},
        {"row_count": -1, "fingerprint": "c" * 64},
        {"row_count": 100, "fingerprint": "not-hex"},
        {"row_count": 5, "fingerprint": "c" * 64},  # below the task's min_test_rows
        {"row_count": 100, "fingerprint": "c" * 64, "split_sizes": {"test": "many"}},
    ],
)
def test_bad_shard_payload_is_a_clear_400(site, owner, body):
    task = make_task(owner)
    body = {"task": task.id, **body}
    body = {k: v for k, v in body.items() if v is not None}
    response = site.client.post("/api/v1/agent/shards", body, format="json")
    assert response.status_code == 400, response.content
    assert error_code(response) in {"invalid", "too_few_rows"}
    assert not DataShard.objects.filter(task=task).exists()


def test_claim_gives_the_job_contract_and_then_204(vendor, site, open_task):
    submission = submit(vendor, open_task)
    job = claim(site)
    assert job["submission"] == {
        "id": submission.id,
        "vendor_id": vendor.organization.id,
        "format": "sklearn",
        "sha256": submission.sha256,
        "size": submission.size,
        "filename": "model.bin",
        "weights_offset": None,  # set only for a fine-tuned submission
    }
    assert job["run"] is None  # only train jobs carry a fine-tuning run
    assert job["task"]["metrics"][0] == {"name": "roc_auc", "direction": "higher", "decimals": 4}
    assert job["task"]["fine_tuning_allowed"] is open_task.fine_tuning_allowed  # a site warms training sandboxes on it
    assert job["attempt"] == 1 and job["lease_seconds"] == 60
    stored = Job.objects.get(id=job["id"])
    assert stored.status == JobStatus.RUNNING and stored.lease_holder == "agent-1"
    assert AuditEvent.objects.filter(
        action="job.claimed", object_id=str(job["id"]), actor_site=site.site
    ).exists()
    assert claim(site, "agent-2") is None


def test_site_never_claims_another_sites_jobs(owner, other_owner, vendor, site, open_task):
    foreign = make_site(other_owner, "north-1")
    submit(vendor, open_task)
    assert claim(foreign) is None
    sibling = make_site(owner, "site-b")  # same organization, but the task's data is not there
    assert claim(sibling) is None
    assert Job.objects.get().status == JobStatus.QUEUED


def test_bad_agent_id_is_a_400(site):
    for agent_id in ["", "has space", "x" * 65, None, ["a"]]:
        response = site.client.post("/api/v1/agent/jobs/claim", {"agent_id": agent_id}, format="json")
        assert response.status_code == 400, agent_id
        assert error_code(response) == "invalid"


def test_lease_renewal_extends_the_lease_of_its_holder(site, running):
    _, job = running
    Job.objects.filter(id=job["id"]).update(lease_expires_at=timezone.now() + timedelta(seconds=5))
    response = site.client.post(f"/api/v1/agent/jobs/{job['id']}/lease", {"agent_id": "agent-1"})
    assert response.status_code == 200
    assert Job.objects.get(id=job["id"]).lease_expires_at > timezone.now() + timedelta(seconds=30)


def test_lease_renewal_by_another_agent_is_lease_lost(site, running):
    _, job = running
    response = site.client.post(f"/api/v1/agent/jobs/{job['id']}/lease", {"agent_id": "agent-2"})
    assert response.status_code == 409
    assert error_code(response) == "lease_lost"
    assert Job.objects.get(id=job["id"]).lease_holder == "agent-1"


def test_site_token_of_one_site_cannot_touch_another_sites_job(owner, other_owner, site, running, settings):
    _, job = running
    for other in (make_site(owner, "site-b"), make_site(other_owner, "north-1")):
        path = f"/api/v1/agent/jobs/{job['id']}"
        responses = [
            other.client.post(f"{path}/lease", {"agent_id": "agent-1"}),
            other.client.get(f"{path}/artifact"),
            post_result(other, job["id"]),
            other.client.post(f"{path}/failure", {"agent_id": "agent-1", "reason": "crashed"}),
        ]
        missing = other.client.post("/api/v1/agent/jobs/999999/lease", {"agent_id": "agent-1"})
        assert [r.status_code for r in responses] == [404, 404, 404, 404]
        assert all(
            r.json() == missing.json() for r in responses if r.get("Content-Type") == "application/json"
        )
    stored = Job.objects.get(id=job["id"])
    assert stored.status == JobStatus.RUNNING and not Result.objects.exists()


def test_site_downloads_the_artifact_of_a_running_job(vendor, site, open_task):
    data = b"\x80\x04" + b"weights" * 10
    upload(vendor, open_task, data=data)
    from marketplace.submissions.models import Submission
    from marketplace.submissions.services import submission_check

    submission_check(submission_id=Submission.objects.get().id)
    job = claim(site)
    response = site.client.get(f"/api/v1/agent/jobs/{job['id']}/artifact")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert hashlib.sha256(body).hexdigest() == job["submission"]["sha256"]


def test_artifact_of_a_job_not_running_is_refused(vendor, site, open_task):
    submission = submit(vendor, open_task)
    job = job_of(submission, site)
    response = site.client.get(f"/api/v1/agent/jobs/{job.id}/artifact")
    assert response.status_code == 409
    assert error_code(response) == "lease_lost"


def test_result_is_recorded_once_and_a_repeat_changes_nothing(site, running, open_task):
    submission, job = running
    first = post_result(site, job["id"])
    assert first.status_code == 200 and first.json()["created"] is True
    repeat = post_result(site, job["id"])
    assert repeat.status_code == 200 and repeat.json()["created"] is False
    assert Result.objects.filter(job_id=job["id"]).count() == 1
    result = Result.objects.get()
    assert result.statistics == release_body(open_task)["statistics"]
    assert result.metrics["accuracy"] == pytest.approx(0.8) and result.n_rows == 100
    assert Job.objects.get(id=job["id"]).status == JobStatus.SUCCEEDED
    assert AuditEvent.objects.filter(action="job.succeeded", object_id=str(job["id"])).count() == 1
    rho, epsilon, delta = release_cost(open_task)
    record = EgressRecord.objects.get()
    assert (record.kind, record.rho, record.epsilon, record.delta) == ("metrics", rho, epsilon, delta)


def test_a_different_second_result_is_a_conflict(site, running):
    _, job = running
    post_result(site, job["id"])
    other = post_result(site, job["id"], correct=0.1)
    assert other.status_code == 409
    assert error_code(other) == "already_reported"
    assert Result.objects.get().metrics["accuracy"] == pytest.approx(0.8)
    assert AuditEvent.objects.filter(action="job.result_refused", object_id=str(job["id"])).count() == 1


def test_job_spec_carries_the_tasks_privacy_and_no_bit_cap(site, running, open_task):
    _, job = running
    assert job["task"]["privacy"] == {"epsilon_per_release": 1.0, "delta": 1e-6, "vendor_epsilon": 10.0,
                                      "task_epsilon": 20.0}  # fmt: skip
    assert "leakage_cap_bits" not in job["task"]


def test_result_from_an_agent_without_the_lease_is_refused(site, running):
    _, job = running
    response = post_result(site, job["id"], agent_id="agent-2")
    assert response.status_code == 409
    assert error_code(response) == "lease_lost"
    assert not Result.objects.exists()


def _set(path, value):
    """A change of one field of the honest body (before its receipt is computed)."""

    def change(body):
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target.get(path[-1])) if callable(value) else value
        return body

    return change


def _drop(block):
    def change(body):
        body["statistics"].pop(block)
        return body

    return change


BAD_RELEASES = {
    "unknown block": _set(("statistics", "extra"), [1.0]),
    "missing block": _drop("score_histogram"),
    "wrong shape": _set(("statistics", "score_histogram"), [[1.0, 2.0, 3.0]]),
    "NaN as a string": _set(("statistics", "score_histogram"), lambda h: [["NaN", *h[0][1:]], h[1]]),
    "a number as a string": _set(("statistics", "score_histogram"), lambda h: [["1", *h[0][1:]], h[1]]),
    "a boolean": _set(("statistics", "score_histogram"), lambda h: [[True, *h[0][1:]], h[1]]),
    "1e300": _set(("statistics", "score_histogram"), lambda h: [[1e300, *h[0][1:]], h[1]]),
    "far below zero": _set(("statistics", "score_histogram"), lambda h: [[-1e6, *h[0][1:]], h[1]]),
    "statistics not an object": _set(("statistics",), [1.0, 2.0]),
    "negative n_rows": _set(("n_rows",), -5),
    "zero n_rows": _set(("n_rows",), 0),
    "n_rows larger than the shard": _set(("n_rows",), 101),
    "n_rows not a number": _set(("n_rows",), "many"),
    "wrong rho": _set(("privacy", "rho"), lambda rho: rho * 2),
    "wrong epsilon": _set(("privacy", "epsilon"), 5.0),
    "wrong delta": _set(("privacy", "delta"), 1e-3),
    "another mechanism": _set(("privacy", "mechanism"), "laplace"),
    "no privacy": _set(("privacy",), None),
    "old-style metrics": _set(("metrics",), {"roc_auc": 0.9, "accuracy": 0.8}),
    "a site-side Ladder flag": _set(("ladder_improved",), True),
}


@pytest.mark.parametrize("change", BAD_RELEASES.values(), ids=BAD_RELEASES.keys())
def test_every_bad_field_from_a_site_is_a_4xx_changes_nothing_and_is_audited(site, running, open_task, change):
    _, job = running
    body = with_receipt(change(release_body(open_task)))
    response = site.client.post(f"/api/v1/agent/jobs/{job['id']}/result", body, format="json")
    assert 400 <= response.status_code < 500, response.content
    assert error_code(response) in {"invalid_release", "invalid_statistics", "wrong_n_rows", "wrong_privacy"}
    assert not Result.objects.exists() and not EgressRecord.objects.exists()
    assert Job.objects.get(id=job["id"]).status == JobStatus.RUNNING
    refused = AuditEvent.objects.get(action="job.result_refused")
    assert refused.object_id == str(job["id"]) and refused.data["code"] == error_code(response)


@pytest.mark.parametrize(
    "ledger",
    [
        lambda ledger: {**ledger, "rho": ledger["rho"] * 2},
        lambda ledger: {**ledger, "epsilon": 1e300},
        lambda ledger: {**ledger, "sha256": "e" * 64},
        lambda ledger: {**ledger, "bytes": ledger["bytes"] + 1},
        lambda ledger: "receipt",
        lambda ledger: {"sha256": "short", "bytes": 1},
    ],
)
def test_a_ledger_receipt_that_does_not_match_is_refused(site, running, open_task, ledger):
    _, job = running
    body = with_receipt(release_body(open_task))
    body["ledger"] = ledger(body["ledger"])
    response = site.client.post(f"/api/v1/agent/jobs/{job['id']}/result", body, format="json")
    assert response.status_code == 400, response.content
    assert not Result.objects.exists() and not EgressRecord.objects.exists()
    assert AuditEvent.objects.filter(action="job.result_refused").count() == 1


def test_a_body_changed_after_its_receipt_is_refused_even_as_a_repeat(site, running, open_task):
    _, job = running
    body = with_receipt(release_body(open_task))
    assert site.client.post(f"/api/v1/agent/jobs/{job['id']}/result", body, format="json").status_code == 200
    body["n_rows"] = 99  # same receipt, another body
    response = site.client.post(f"/api/v1/agent/jobs/{job['id']}/result", body, format="json")
    assert response.status_code == 409 and error_code(response) == "already_reported"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_statistic_is_refused(site, running, open_task, literal):
    _, job = running
    body = with_receipt(release_body(open_task))
    body["statistics"]["score_histogram"][0][0] = 123456.5
    text = json.dumps(body).replace("123456.5", literal)
    response = site.client.post(f"/api/v1/agent/jobs/{job['id']}/result", text, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "error" in response.json()
    assert not Result.objects.exists()
    assert Job.objects.get(id=job["id"]).status == JobStatus.RUNNING


def test_malformed_json_is_a_400(site, running):
    _, job = running
    response = site.client.post(
        f"/api/v1/agent/jobs/{job['id']}/result", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert error_code(response) == "parse_error"


@pytest.mark.parametrize("reason", ["exploded", "agent_lost", "", 7])
def test_failure_reason_outside_the_fixed_list_is_a_400(site, running, reason):
    _, job = running
    response = site.client.post(f"/api/v1/agent/jobs/{job['id']}/failure", {"agent_id": "agent-1", "reason": reason},
                                format="json")  # fmt: skip
    assert response.status_code == 400
    assert error_code(response) == "invalid"
    assert Job.objects.get(id=job["id"]).status == JobStatus.RUNNING


@pytest.mark.parametrize("reason", ["crashed", "timeout", "out_of_memory", "invalid_output"])
def test_a_data_dependent_failure_is_refused_and_audited(site, running, reason):
    """After its model has seen data a job releases a fallback's statistics, never a reason."""
    _, job = running
    response = site.client.post(f"/api/v1/agent/jobs/{job['id']}/failure", {"agent_id": "agent-1", "reason": reason})
    assert response.status_code == 400 and error_code(response) == "data_dependent_failure"
    assert Job.objects.get(id=job["id"]).status == JobStatus.RUNNING
    assert AuditEvent.objects.filter(action="job.failure_refused", object_id=str(job["id"])).count() == 1


def test_pre_data_failure_fails_the_job_and_the_submission_idempotently(
    site, running, django_capture_on_commit_callbacks
):
    submission, job = running
    path = f"/api/v1/agent/jobs/{job['id']}/failure"
    with django_capture_on_commit_callbacks(execute=True):
        first = site.client.post(path, {"agent_id": "agent-1", "reason": "invalid_artifact"})
    assert first.status_code == 200 and first.json()["created"] is True
    repeat = site.client.post(path, {"agent_id": "agent-1", "reason": "invalid_artifact"})
    assert repeat.status_code == 200 and repeat.json()["created"] is False
    other = site.client.post(path, {"agent_id": "agent-1", "reason": "policy_violation"})
    assert other.status_code == 409
    stored = Job.objects.get(id=job["id"])
    assert stored.status == JobStatus.FAILED and stored.failure_reason == "invalid_artifact"
    submission.refresh_from_db()
    assert submission.status == "failed" and submission.status_reason == "invalid_artifact"
    assert submission.results_visible_at is not None
    assert AuditEvent.objects.filter(action="job.failed", object_id=str(job["id"])).count() == 1
    assert PrivacyCharge.objects.get(submission=submission).refunded is True  # nothing was released


def test_site_side_failure_requeues_while_attempts_remain(site, running, settings, monkeypatch):
    settings.VAULTBENCH_MAX_JOB_ATTEMPTS = 2
    monkeypatch.setenv("VAULTBENCH_RETRY_DELAY_SECONDS", "0")  # claimable again at once
    _, job = running
    response = site.client.post(
        f"/api/v1/agent/jobs/{job['id']}/failure", {"agent_id": "agent-1", "reason": "internal_error"}
    )
    assert response.status_code == 200 and response.json()["job"]["status"] == "queued"
    again = claim(site, "agent-2")
    assert again["id"] == job["id"] and again["attempt"] == 2
    last = site.client.post(
        f"/api/v1/agent/jobs/{job['id']}/failure", {"agent_id": "agent-2", "reason": "internal_error"}
    )
    assert last.json()["job"] == {"id": job["id"], "status": "failed", "failure_reason": "internal_error"}


def test_expired_lease_requeues_the_job_and_the_old_agent_is_refused(site, running):
    _, job = running
    Job.objects.filter(id=job["id"]).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert jobs_requeue_expired() == 1
    stored = Job.objects.get(id=job["id"])
    assert stored.status == JobStatus.QUEUED and stored.lease_holder == "" and stored.lease_expires_at is None
    assert AuditEvent.objects.filter(action="job.lease_expired", object_id=str(job["id"])).exists()
    taken = claim(site, "agent-2")
    assert taken["id"] == job["id"] and taken["attempt"] == 2
    late = post_result(site, job["id"], agent_id="agent-1")
    assert late.status_code == 409 and error_code(late) == "lease_lost"
    renew = site.client.post(f"/api/v1/agent/jobs/{job['id']}/lease", {"agent_id": "agent-1"})
    assert renew.status_code == 409
    assert post_result(site, job["id"], agent_id="agent-2").status_code == 200
    assert Result.objects.count() == 1


def test_live_lease_is_not_requeued(site, running):
    _, job = running
    assert jobs_requeue_expired() == 0
    assert Job.objects.get(id=job["id"]).status == JobStatus.RUNNING


def test_claims_go_to_the_oldest_job_first(vendor, site, owner):
    task = make_task(owner, quota_per_day=10)
    register_shard(site, task)
    first, second = submit(vendor, task, name="a"), submit(vendor, task, name="b")
    assert claim(site)["submission"]["id"] == first.id
    assert claim(site, "agent-2")["submission"]["id"] == second.id


def test_a_site_token_records_its_use_once_a_minute_not_on_every_request(site):
    from datetime import timedelta

    token = SiteToken.objects.get(site=site.site)
    heartbeat = {"agent_id": "pod-7", "capabilities": {}}
    assert site.client.post("/api/v1/agent/heartbeat", heartbeat, format="json").status_code == 200
    first = SiteToken.objects.get(id=token.id).last_used_at
    assert first is not None
    assert site.client.post("/api/v1/agent/heartbeat", heartbeat, format="json").status_code == 200
    assert SiteToken.objects.get(id=token.id).last_used_at == first  # within the minute: no write
    SiteToken.objects.filter(id=token.id).update(last_used_at=first - timedelta(seconds=61))
    assert site.client.post("/api/v1/agent/heartbeat", heartbeat, format="json").status_code == 200
    assert SiteToken.objects.get(id=token.id).last_used_at > first  # a minute later: recorded again
