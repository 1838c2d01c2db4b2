"""Retry semantics at the hub: each failure reason is final or retryable, a requeued job is a new
attempt with its own token (the same agent may take it), a superseded attempt's post is refused,
and lease instants come from the database's clock only."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from evaluator import agent as site_agent
from evaluator.privacy.statistics import sufficient_statistics
from marketplace.jobs.models import FINAL_REASONS, RETRYABLE_REASONS, FailureReason, Job, JobStatus, Result
from marketplace.jobs.releases import release_spec
from marketplace.jobs.services import jobs_requeue_expired
from tests.hub.helpers import claim, error_code, post_result, release_body, submit, with_receipt


@pytest.fixture
def running(vendor, site, open_task):
    submission = submit(vendor, open_task)
    return submission, claim(site)


def fail(site, job, reason, *, agent_id="agent-1", attempt=None):
    body = {"agent_id": agent_id, "reason": reason}
    if attempt is not None:
        body["attempt"] = attempt
    return site.client.post(f"/api/v1/agent/jobs/{job['id']}/failure", body, format="json")


def test_every_failure_reason_is_either_final_or_retryable_and_the_agent_agrees():
    assert RETRYABLE_REASONS | FINAL_REASONS == set(FailureReason)
    assert not RETRYABLE_REASONS & FINAL_REASONS
    reportable = set(FailureReason) - {FailureReason.AGENT_LOST}
    assert site_agent.FAILURE_REASONS == {str(r) for r in reportable}
    assert site_agent.RETRYABLE_REASONS == {str(r) for r in RETRYABLE_REASONS & reportable}
    assert site_agent.FINAL_REASONS == {str(r) for r in FINAL_REASONS}


@pytest.mark.parametrize("reason", ["policy_violation", "artifact_mismatch", "invalid_artifact", "withheld"])
def test_a_final_failure_ends_the_job_at_once_with_attempts_left(site, running, settings, reason):
    settings.VAULTBENCH_MAX_JOB_ATTEMPTS = 3
    _, job = running
    response = fail(site, job, reason, attempt=job["attempt_token"])
    assert response.status_code == 200
    assert response.json()["job"] == {"id": job["id"], "status": "failed", "failure_reason": reason}
    assert Job.objects.get(id=job["id"]).attempts == 1
    assert claim(site) is None


def test_the_same_agent_takes_a_requeued_job_again_as_a_new_attempt(site, running, settings, monkeypatch):
    settings.VAULTBENCH_MAX_JOB_ATTEMPTS = 3
    monkeypatch.setenv("VAULTBENCH_RETRY_DELAY_SECONDS", "0")
    _, first = running
    assert len(first["attempt_token"]) == 32
    assert fail(site, first, "internal_error", attempt=first["attempt_token"]).json()["job"]["status"] == "queued"
    second = claim(site, "agent-1")  # a one-agent site: the same agent retries
    assert second["id"] == first["id"] and second["attempt"] == 2
    assert second["attempt_token"] != first["attempt_token"]
    # the first attempt's post (a repeat after a lost answer, say) no longer counts
    late = post_result(site, first["id"], attempt=first["attempt_token"])
    assert late.status_code == 409 and error_code(late) == "attempt_superseded"
    assert post_result(site, first["id"], attempt=second["attempt_token"]).status_code == 200
    assert Result.objects.filter(job_id=first["id"]).count() == 1


def test_a_retryable_failure_ends_with_its_own_reason_after_the_last_attempt(site, running, settings, monkeypatch):
    settings.VAULTBENCH_MAX_JOB_ATTEMPTS = 2
    monkeypatch.setenv("VAULTBENCH_RETRY_DELAY_SECONDS", "0")
    _, job = running
    fail(site, job, "data_unavailable", attempt=job["attempt_token"])
    again = claim(site)
    last = fail(site, again, "data_unavailable", attempt=again["attempt_token"])
    assert last.json()["job"] == {"id": job["id"], "status": "failed", "failure_reason": "data_unavailable"}


def test_a_job_requeued_after_a_site_failure_waits_before_it_is_claimed_again(site, running):
    """A site's trouble of a few seconds must not spend every attempt at once: the requeued job
    waits 10 s times its attempts (VAULTBENCH_RETRY_DELAY_SECONDS) on the database's clock."""
    _, job = running
    assert fail(site, job, "data_unavailable", attempt=job["attempt_token"]).json()["job"]["status"] == "queued"
    stored = Job.objects.get(id=job["id"])
    assert 5 < (stored.not_before - timezone.now()).total_seconds() <= 11
    assert claim(site) is None  # not yet
    Job.objects.filter(id=job["id"]).update(not_before=timezone.now() - timedelta(seconds=1))
    assert claim(site)["attempt"] == 2


def test_a_finished_attempt_whose_lease_ran_out_unclaimed_still_counts(site, running):
    _, job = running
    Job.objects.filter(id=job["id"]).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert jobs_requeue_expired() == 1  # the hub was away longer than the lease
    response = post_result(site, job["id"], attempt=job["attempt_token"])
    assert response.status_code == 200 and response.json()["job"]["status"] == "succeeded"
    stored = Job.objects.get(id=job["id"])
    assert stored.attempts == 1 and claim(site) is None


def test_a_post_without_the_lease_or_its_attempt_is_still_refused_after_requeue(site, running):
    _, job = running
    Job.objects.filter(id=job["id"]).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    jobs_requeue_expired()
    late = post_result(site, job["id"])  # an older agent that sends no attempt
    assert late.status_code == 409 and error_code(late) == "lease_lost"


def test_a_malformed_attempt_is_a_400(site, running):
    _, job = running
    response = post_result(site, job["id"], attempt="not-a-token")
    assert response.status_code == 400 and error_code(response) == "invalid_attempt"


def test_leases_are_granted_and_expired_on_the_databases_clock(site, vendor, open_task, monkeypatch):
    real_now = timezone.now
    submit(vendor, open_task)
    # The web process granting the lease runs 2 h slow: the lease is still the DB's now + 60 s.
    monkeypatch.setattr(timezone, "now", lambda: real_now() - timedelta(hours=2))
    job = claim(site)
    stored = Job.objects.get(id=job["id"])
    assert abs((stored.lease_expires_at - real_now()).total_seconds() - 60) < 10
    # The worker expiring leases runs 30 s (or 2 h) fast: a healthy lease stays.
    for skew in (timedelta(seconds=30), timedelta(hours=2)):
        monkeypatch.setattr(timezone, "now", lambda skew=skew: real_now() + skew)
        assert jobs_requeue_expired() == 0
    renew = site.client.post(f"/api/v1/agent/jobs/{job['id']}/lease", {"agent_id": "agent-1"})
    assert renew.status_code == 200
    stored.refresh_from_db()
    assert abs((stored.lease_expires_at - real_now()).total_seconds() - 60) < 10
    assert stored.status == JobStatus.RUNNING


def test_a_metric_undefined_at_one_site_is_left_out_not_a_failure(site, running, open_task):
    """roc_auc needs both classes; a site whose public rows hold one only releases its statistics
    and the hub reports the metric as undefined there (absent), the job succeeds."""
    _, job = running
    spec = release_spec(open_task)
    y = np.ones(100, dtype=np.int64)
    predictions = np.tile([0.2, 0.8], (100, 1))
    statistics = {b: v.tolist() for b, v in sufficient_statistics(spec, y, predictions).items()}
    body = with_receipt({**release_body(open_task), "statistics": statistics, "attempt": job["attempt_token"]})
    response = site.client.post(f"/api/v1/agent/jobs/{job['id']}/result", body, format="json")
    assert response.status_code == 200, response.content
    result = Result.objects.get(job_id=job["id"])
    assert "roc_auc" not in result.metrics and result.metrics["accuracy"] == pytest.approx(1.0)
    assert Job.objects.get(id=job["id"]).status == JobStatus.SUCCEEDED


def test_a_site_reads_the_hubs_receipts_of_its_own_releases_only(owner, site, running, open_task):
    from tests.conftest import make_site, register_shard

    _, job = running
    body = with_receipt(release_body(open_task))
    assert site.client.post(f"/api/v1/agent/jobs/{job['id']}/result", body, format="json").status_code == 200
    response = site.client.get("/api/v1/agent/receipts")
    assert response.status_code == 200
    [receipt] = response.json()["receipts"]
    assert (receipt["job_id"], receipt["kind"], receipt["sha256"]) == (job["id"], "metrics", body["ledger"]["sha256"])
    assert response.json()["next_after"] is None
    other = make_site(owner, "site-b")
    register_shard(other, open_task)
    assert other.client.get("/api/v1/agent/receipts").json()["receipts"] == []
    assert site.client.get("/api/v1/agent/receipts?limit=0").status_code == 400
