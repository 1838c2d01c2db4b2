"""The hub's side of the disclosure policy: quotas, final nominations, reveal at close, release
approval, the Ladder view and the egress mirror. The site's side is in tests/evaluator."""

import threading

import pytest
from django.db import connection

from marketplace.catalog.services import task_close
from marketplace.egress.models import EgressRecord
from marketplace.jobs.models import Job, JobStatus
from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.submissions.models import QuotaCounter, Submission
from tests.conftest import make_site, make_task, register_shard, upload
from tests.hub.helpers import claim, error_code, post_result, submit, with_receipt


def _score(site, submission, metrics, *, n_rows=100, agent="agent-1"):
    job = claim(site, agent)
    assert job["submission"]["id"] == submission.id
    response = post_result(site, job["id"], agent_id=agent, metrics=metrics, n_rows=n_rows)
    assert response.status_code == 200, response.content
    return job["id"]


def _private(site, job_id, metrics, *, n_rows=50):
    body = with_receipt({"agent_id": "agent-1", "metrics": metrics, "n_rows": n_rows})
    return site.client.post(f"/api/v1/agent/jobs/{job_id}/private-result", body, format="json")


# --- quotas ------------------------------------------------------------------------------------


def test_quota_counts_uploads_and_shows_what_remains(owner, vendor, site):
    task = make_task(owner, quota_per_day=2, quota_total=3)
    register_shard(site, task)
    submit(vendor, task, name="a")
    quota = vendor.client.get(f"/api/v1/tasks/{task.id}/quota").json()
    assert (quota["used_today"], quota["remaining_today"], quota["remaining_total"]) == (1, 1, 2)
    submit(vendor, task, name="b")
    refused = upload(vendor, task, name="c")
    assert refused.status_code == 429 and error_code(refused) == "quota_exceeded"
    assert Submission.objects.filter(task=task).count() == 2


def test_failed_jobs_give_quota_back_when_the_owner_says_so(owner, vendor, site, django_capture_on_commit_callbacks):
    task = make_task(owner, quota_per_day=1, failed_jobs_consume_quota=False)
    register_shard(site, task)
    submit(vendor, task)
    job = claim(site)
    with django_capture_on_commit_callbacks(execute=True):
        site.client.post(f"/api/v1/agent/jobs/{job['id']}/failure", {"agent_id": "agent-1", "reason": "crashed"})
    assert vendor.client.get(f"/api/v1/tasks/{task.id}/quota").json()["remaining_today"] == 1
    assert upload(vendor, task, name="again").status_code == 201


def test_failed_jobs_keep_their_quota_by_default(owner, vendor, site, django_capture_on_commit_callbacks):
    task = make_task(owner, quota_per_day=1)
    register_shard(site, task)
    submit(vendor, task)
    job = claim(site)
    with django_capture_on_commit_callbacks(execute=True):
        site.client.post(f"/api/v1/agent/jobs/{job['id']}/failure", {"agent_id": "agent-1", "reason": "crashed"})
    assert upload(vendor, task, name="again").status_code == 429


@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_never_exceed_the_daily_quota(owner, vendor, site):
    task = make_task(owner, quota_per_day=3)
    register_shard(site, task)
    statuses, barrier = [], threading.Barrier(8)

    def attempt(i):
        barrier.wait()
        try:
            statuses.append(upload(vendor, task, name=f"m{i}").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] * 3 + [429] * 5
    assert Submission.objects.filter(task=task).count() == 3
    assert QuotaCounter.objects.get(task=task, day__isnull=False).used == 3


# --- release approval --------------------------------------------------------------------------


def test_held_result_waits_for_the_owners_release(owner, vendor, site, django_capture_on_commit_callbacks):
    task = make_task(owner, requires_release_approval=True)
    register_shard(site, task)
    submission = submit(vendor, task)
    job = claim(site)
    assert job["task"]["requires_release_approval"] is True
    assert site.client.post(f"/api/v1/agent/jobs/{job['id']}/hold", {"agent_id": "agent-1"}).status_code == 200
    assert Job.objects.get(id=job["id"]).status == JobStatus.HELD
    assert site.client.get("/api/v1/agent/pending").json() == {"releases": [], "reveals": []}
    assert vendor.client.post(f"/api/v1/jobs/{job['id']}/release").status_code == 404  # not the owner's
    released = owner.client.post(f"/api/v1/jobs/{job['id']}/release")
    assert released.status_code == 200
    pending = site.client.get("/api/v1/agent/pending").json()
    assert pending["releases"] == [{"job_id": job["id"], "decision": "approved"}]
    # Any agent of the site posts the held result; it has no lease.
    with django_capture_on_commit_callbacks(execute=True):
        assert post_result(site, job["id"], agent_id="agent-2").status_code == 200
    submission.refresh_from_db()
    assert submission.status == "scored"
    assert owner.client.post(f"/api/v1/jobs/{job['id']}/release").status_code == 409


def test_withheld_result_fails_the_job_with_a_coarse_reason(owner, vendor, site, django_capture_on_commit_callbacks):
    task = make_task(owner, requires_release_approval=True)
    register_shard(site, task)
    submission = submit(vendor, task)
    job = claim(site)
    site.client.post(f"/api/v1/agent/jobs/{job['id']}/hold", {"agent_id": "agent-1"})
    assert owner.client.post(f"/api/v1/jobs/{job['id']}/withhold").status_code == 200
    body = with_receipt({"agent_id": "agent-1", "reason": "withheld"})
    with django_capture_on_commit_callbacks(execute=True):
        assert site.client.post(f"/api/v1/agent/jobs/{job['id']}/failure", body, format="json").status_code == 200
    submission.refresh_from_db()
    assert (submission.status, submission.status_reason) == ("failed", "withheld")
    assert vendor.client.get(f"/api/v1/jobs/{job['id']}").json()["failure_reason"] == "withheld"
    assert EgressRecord.objects.get(job_id=job["id"]).kind == "failure"


# --- reveal at close ---------------------------------------------------------------------------


def test_private_scores_are_revealed_only_after_the_task_closes(owner, vendor, second_vendor, site, django_capture_on_commit_callbacks):
    task = make_task(owner, public_split_fraction=0.5, final_submissions=1)
    register_shard(site, task)
    first = submit(vendor, task, name="first")
    second = submit(vendor, task, name="second")
    other = submit(second_vendor, task, name="other")
    jobs = {}
    with django_capture_on_commit_callbacks(execute=True):
        for submission, auc in ((first, 0.9), (second, 0.8), (other, 0.85)):
            jobs[submission.id] = _score(site, submission, {"roc_auc": auc, "accuracy": 0.8})
    # The vendor picks its weaker public model as final.
    assert vendor.client.post(f"/api/v1/submissions/{second.id}/nominate").status_code == 200
    too_many = vendor.client.post(f"/api/v1/submissions/{first.id}/nominate")
    assert too_many.status_code == 409 and error_code(too_many) == "too_many_finals"
    assert second_vendor.client.post(f"/api/v1/submissions/{first.id}/nominate").status_code == 404

    refused = vendor.client.get(f"/api/v1/tasks/{task.id}/leaderboard?split=private")
    assert refused.status_code == 409 and error_code(refused) == "task_not_closed"
    assert site.client.get("/api/v1/agent/pending").json()["reveals"] == []
    early = _private(site, jobs[first.id], {"roc_auc": 0.5, "accuracy": 0.5})
    assert early.status_code == 409 and error_code(early) == "task_not_closed"

    task_close(task=task, actor=owner.user)
    assert sorted(site.client.get("/api/v1/agent/pending").json()["reveals"]) == sorted(jobs.values())
    with django_capture_on_commit_callbacks(execute=True):
        for submission, auc in ((first, 0.70), (second, 0.88), (other, 0.86)):
            assert _private(site, jobs[submission.id], {"roc_auc": auc, "accuracy": 0.7}).status_code == 200
    assert site.client.get("/api/v1/agent/pending").json()["reveals"] == []
    board = vendor.client.get(f"/api/v1/tasks/{task.id}/leaderboard?split=private").json()
    assert [(r["model_name"], r["metrics"]["roc_auc"]) for r in board["rows"]] == [("second", 0.88), ("other", 0.86)]
    assert board["split"] == "private"
    public = vendor.client.get(f"/api/v1/tasks/{task.id}/leaderboard").json()
    assert [r["model_name"] for r in public["rows"]] == ["first", "other", "second"]
    # A repeated reveal changes nothing.
    assert _private(site, jobs[first.id], {"roc_auc": 0.1, "accuracy": 0.1}).json()["created"] is False
    assert LeaderboardEntry.objects.get(submission=first).private_metrics["roc_auc"] == 0.70


# --- Ladder view and the egress mirror ----------------------------------------------------------


def test_ladder_board_shows_each_vendors_current_score_once(owner, vendor, site, django_capture_on_commit_callbacks):
    task = make_task(owner, leaderboard_mode="ladder")
    register_shard(site, task)
    with django_capture_on_commit_callbacks(execute=True):
        for name in ("a", "b"):
            submission = submit(vendor, task, name=name)
            job = claim(site)
            assert job["task"]["leaderboard_mode"] == "ladder"
            assert job["submission"]["vendor_id"] == vendor.organization.id
            body = {"metrics": {"roc_auc": 0.9, "accuracy": 0.8}, "n_rows": 100, "ladder_improved": name == "a"}
            assert post_result(site, job["id"], **body).status_code == 200
    rows = vendor.client.get(f"/api/v1/tasks/{task.id}/leaderboard").json()["rows"]
    assert [r["model_name"] for r in rows] == ["b"]
    assert LeaderboardEntry.objects.get(submission=submission).ladder_improved is False


def test_a_receipt_that_does_not_match_the_released_body_is_refused(vendor, site, open_task):
    submit(vendor, open_task)
    job = claim(site)
    forged = with_receipt({"agent_id": "agent-1", "metrics": {"roc_auc": 0.1, "accuracy": 0.1}, "n_rows": 100})
    forged["metrics"] = {"roc_auc": 0.99, "accuracy": 0.99}
    response = site.client.post(f"/api/v1/agent/jobs/{job['id']}/result", forged, format="json")
    assert response.status_code == 400 and error_code(response) == "ledger_mismatch"
    assert not EgressRecord.objects.exists() and Job.objects.get(id=job["id"]).status == JobStatus.RUNNING


def test_every_release_is_mirrored_once_with_its_hash_and_cost(owner, other_owner, vendor, second_vendor, site, open_task):
    submit(vendor, open_task)
    job = claim(site)
    body = with_receipt({"agent_id": "agent-1", "metrics": {"roc_auc": 0.9, "accuracy": 0.8}, "n_rows": 100})
    body["ledger"]["cost_bits"] = 23.3
    for _ in range(2):
        assert site.client.post(f"/api/v1/agent/jobs/{job['id']}/result", body, format="json").status_code == 200
    record = EgressRecord.objects.get()
    assert (record.sha256, record.bytes, record.cost_bits) == (body["ledger"]["sha256"], body["ledger"]["bytes"], 23.3)
    listed = owner.client.get("/api/v1/egress").json()["results"]
    assert [r["sha256"] for r in listed] == [record.sha256]
    assert other_owner.client.get("/api/v1/egress").json()["results"] == []
    assert vendor.client.get("/api/v1/egress").json()["results"] == []
    csv = owner.client.get("/api/v1/egress.csv")
    assert csv["Content-Type"] == "text/csv" and record.sha256 in csv.content.decode()
    leakage = owner.client.get(f"/api/v1/tasks/{open_task.id}/leakage").json()
    assert leakage == [{"vendor_id": vendor.organization.id, "vendor": vendor.organization.name, "releases": 1,
                        "bytes": record.bytes, "cost_bits": 23.3, "epsilon": None, "cap_bits": None}]
    assert second_vendor.client.get(f"/api/v1/tasks/{open_task.id}/leakage").json() == []


def test_sites_of_another_owner_cannot_reveal_or_hold(owner, other_owner, vendor, site, open_task):
    submit(vendor, open_task)
    job = claim(site)
    foreign = make_site(other_owner, "elsewhere")
    assert foreign.client.post(f"/api/v1/agent/jobs/{job['id']}/hold", {"agent_id": "agent-1"}).status_code == 404
    assert _private(foreign, job["id"], {"roc_auc": 0.5, "accuracy": 0.5}).status_code == 404
