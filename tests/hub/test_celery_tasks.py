"""Celery tasks are an interface: ids in, one service call, safe to run twice; beat requeues leases."""

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError

from marketplace.audit.models import AuditEvent
from marketplace.celery import app
from marketplace.jobs.models import FailureReason, Job, JobStatus
from marketplace.jobs.tasks import jobs_requeue_expired_task
from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.leaderboard.tasks import leaderboard_aggregate_task
from marketplace.submissions.models import Submission, SubmissionStatus
from marketplace.submissions.tasks import submission_check_task, submissions_reconcile_task
from tests.conftest import make_site, make_task, register_shard, upload
from tests.hub.helpers import claim, post_result, submit


def test_submission_check_twice_dispatches_once(vendor, site, open_task):
    submission_id = upload(vendor, open_task).json()["id"]
    submission_check_task(submission_id)
    submission_check_task(submission_id)
    assert Job.objects.filter(submission_id=submission_id).count() == 1
    assert Submission.objects.get(id=submission_id).status == SubmissionStatus.EVALUATING
    assert (
        AuditEvent.objects.filter(action="submission.dispatched", object_id=str(submission_id)).count() == 1
    )


def test_submission_check_rejects_a_corrupted_stored_artifact(vendor, site, open_task):
    submission = Submission.objects.get(id=upload(vendor, open_task).json()["id"])
    with open(submission.artifact.path, "ab") as stored:
        stored.write(b"tampered")
    submission_check_task(submission.id)
    submission.refresh_from_db()
    assert submission.status == SubmissionStatus.REJECTED and submission.status_reason == "artifact_corrupted"
    assert not Job.objects.exists()


def test_submission_check_of_a_missing_submission_is_a_no_op(db):
    submission_check_task(999999)


def test_leaderboard_aggregation_twice_scores_once(vendor, site, open_task):
    submission = submit(vendor, open_task)
    post_result(site, claim(site)["id"])
    leaderboard_aggregate_task(submission.id)
    leaderboard_aggregate_task(submission.id)
    assert LeaderboardEntry.objects.filter(submission=submission).count() == 1
    assert LeaderboardEntry.objects.get().n_rows == 100
    assert AuditEvent.objects.filter(action="submission.scored", object_id=str(submission.id)).count() == 1


def test_aggregation_before_all_sites_report_does_nothing(vendor, site, open_task):
    submission = submit(vendor, open_task)
    leaderboard_aggregate_task(submission.id)
    assert not LeaderboardEntry.objects.exists()
    assert Submission.objects.get(id=submission.id).status == SubmissionStatus.EVALUATING


def test_requeue_task_twice_moves_an_expired_job_once(vendor, site, open_task):
    submit(vendor, open_task)
    job_id = claim(site)["id"]
    Job.objects.filter(id=job_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert jobs_requeue_expired_task() == 1
    assert jobs_requeue_expired_task() == 0
    assert Job.objects.get(id=job_id).status == JobStatus.QUEUED
    assert AuditEvent.objects.filter(action="job.lease_expired", object_id=str(job_id)).count() == 1


def test_requeue_gives_up_after_max_attempts(
    vendor, site, open_task, settings, django_capture_on_commit_callbacks
):
    settings.VAULTBENCH_MAX_JOB_ATTEMPTS = 1
    submission = submit(vendor, open_task)
    job_id = claim(site)["id"]
    Job.objects.filter(id=job_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_requeue_expired_task() == 1
    job = Job.objects.get(id=job_id)
    assert job.status == JobStatus.FAILED and job.failure_reason == FailureReason.AGENT_LOST
    submission.refresh_from_db()
    assert submission.status == SubmissionStatus.FAILED and submission.status_reason == "agent_lost"


def test_beat_schedules_the_requeue_task():
    schedule = django_settings.CELERY_BEAT_SCHEDULE
    entry = next(
        e for e in schedule.values() if e["task"] == "marketplace.jobs.tasks.jobs_requeue_expired_task"
    )
    assert entry["schedule"].total_seconds() <= django_settings.VAULTBENCH_LEASE_SECONDS
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks
    assert app.conf.beat_schedule == schedule


def test_hub_tasks_are_registered_under_stable_names():
    app.loader.import_default_modules()
    for name in ["marketplace.submissions.tasks.submission_check_task",
                 "marketplace.leaderboard.tasks.leaderboard_aggregate_task",
                 "marketplace.jobs.tasks.jobs_requeue_expired_task",
                 "marketplace.submissions.tasks.submissions_reconcile_task"]:  # fmt: skip
        assert name in app.tasks


# --- the reconciler ---------------------------------------------------------------------------

NOTHING_REPAIRED = {"checked": 0, "aggregated": 0, "revealed": 0, "sites_flagged": 0, "sites_cleared": 0}


def _age(queryset, minutes: int = 3) -> None:
    """Moves rows' last change into the past, past the reconciler's grace period."""
    queryset.update(updated_at=timezone.now() - timedelta(minutes=minutes))


def _reconciled(submission) -> list[dict]:
    return list(
        AuditEvent.objects.filter(action="submission.reconciled", object_id=str(submission.id)).values_list(
            "data", flat=True
        )
    )


def test_reconciler_scores_a_submission_whose_aggregation_never_ran_once(vendor, site, open_task):
    # The aggregation is enqueued on commit, which this test's transaction never reaches: the
    # message is lost, as when the worker was killed or the broker was down.
    submission = submit(vendor, open_task)
    job_id = claim(site)["id"]
    assert post_result(site, job_id).status_code == 200
    assert Submission.objects.get(id=submission.id).status == SubmissionStatus.EVALUATING
    assert submissions_reconcile_task() == NOTHING_REPAIRED  # just finished: its message may be on its way

    _age(Job.objects.filter(id=job_id))
    assert submissions_reconcile_task() == {**NOTHING_REPAIRED, "aggregated": 1}
    submission.refresh_from_db()
    assert submission.status == SubmissionStatus.SCORED
    assert LeaderboardEntry.objects.get(submission=submission).n_rows == 100
    assert _reconciled(submission) == [{"repair": "aggregated", "status": "scored"}]

    assert submissions_reconcile_task() == NOTHING_REPAIRED
    assert len(_reconciled(submission)) == 1
    assert AuditEvent.objects.filter(action="submission.scored", object_id=str(submission.id)).count() == 1


def test_reconciler_fails_a_submission_whose_jobs_all_failed(vendor, site, open_task):
    submission = submit(vendor, open_task)
    job_id = claim(site)["id"]
    body = {"agent_id": "agent-1", "reason": "invalid_artifact"}
    assert site.client.post(f"/api/v1/agent/jobs/{job_id}/failure", body).status_code == 200
    _age(Job.objects.filter(id=job_id))
    assert submissions_reconcile_task() == {**NOTHING_REPAIRED, "aggregated": 1}
    submission.refresh_from_db()
    assert (submission.status, submission.status_reason) == ("failed", "invalid_artifact")
    assert submissions_reconcile_task() == NOTHING_REPAIRED


def test_reconciler_leaves_submissions_with_a_job_still_running(owner, vendor, site):
    second_site = make_site(owner, "site-b")
    task = make_task(owner)
    register_shard(site, task)
    register_shard(second_site, task)
    submission = submit(vendor, task)
    assert post_result(site, claim(site)["id"]).status_code == 200
    claim(second_site)
    _age(Job.objects.filter(submission=submission))
    assert submissions_reconcile_task() == NOTHING_REPAIRED
    assert Submission.objects.get(id=submission.id).status == SubmissionStatus.EVALUATING


def test_reconciler_checks_an_upload_whose_check_never_ran(vendor, site, open_task):
    submission = Submission.objects.get(id=upload(vendor, open_task).json()["id"])
    assert submission.status == SubmissionStatus.CHECKING  # its check was never enqueued
    assert submissions_reconcile_task() == NOTHING_REPAIRED
    _age(Submission.objects.filter(id=submission.id))
    assert submissions_reconcile_task() == {**NOTHING_REPAIRED, "checked": 1}
    assert Submission.objects.get(id=submission.id).status == SubmissionStatus.EVALUATING
    assert _reconciled(submission) == [{"repair": "checked", "status": "evaluating"}]
    assert submissions_reconcile_task() == NOTHING_REPAIRED
    assert Job.objects.filter(submission=submission).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("outcome", ["result", "failure"])
def test_a_stored_post_is_answered_200_when_the_broker_is_down(vendor, site, open_task, monkeypatch, outcome):
    """Real commits: the aggregation is enqueued inside the agent's request, and the broker refuses it."""
    submission = submit(vendor, open_task)
    job_id = claim(site)["id"]

    def broker_down(*args, **kwargs):
        raise OperationalError("[Errno 111] Connection refused")

    monkeypatch.setattr(leaderboard_aggregate_task, "apply_async", broker_down)
    if outcome == "result":
        response = post_result(site, job_id)
    else:
        response = site.client.post(
            f"/api/v1/agent/jobs/{job_id}/failure", {"agent_id": "agent-1", "reason": "invalid_artifact"}
        )
    assert response.status_code == 200, response.content
    assert response.json()["created"] is True
    assert Job.objects.get(id=job_id).status == ("succeeded" if outcome == "result" else "failed")
    assert Submission.objects.get(id=submission.id).status == SubmissionStatus.EVALUATING

    _age(Job.objects.filter(id=job_id))
    assert submissions_reconcile_task()["aggregated"] == 1
    expected = SubmissionStatus.SCORED if outcome == "result" else SubmissionStatus.FAILED
    assert Submission.objects.get(id=submission.id).status == expected


def test_beat_schedules_the_reconciler():
    schedule = django_settings.CELERY_BEAT_SCHEDULE
    tasks = [entry["task"] for entry in schedule.values()]
    assert "marketplace.submissions.tasks.submissions_reconcile_task" in tasks


def _broker_is_redis() -> bool:
    return django_settings.CELERY_BROKER_URL.startswith("redis://")


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.skipif(connection.vendor != "postgresql", reason="production mode: needs PostgreSQL")
@pytest.mark.skipif(not _broker_is_redis(), reason="production mode: needs a Redis broker")
@pytest.mark.django_db(transaction=True)
def test_real_worker_checks_a_submission_through_redis(
    vendor, site, open_task, settings, tmp_path, monkeypatch
):
    """Not eager: the task travels through Redis to a separate `celery worker` process that uses
    the test database (test_vaultbench) and this test's MEDIA_ROOT (tmp_path/media)."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False  # the autouse fixture turns it back on for the next test
    queue = f"hub-test-{os.getpid()}-{int(time.time())}"  # a private queue: no other worker steals it
    with monkeypatch.context() as patched:  # the upload's own enqueue is replaced by the one below
        patched.setattr(submission_check_task, "delay", lambda *args, **kwargs: None)
        submission = Submission.objects.get(id=upload(vendor, open_task).json()["id"])
    assert submission.status == SubmissionStatus.CHECKING

    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "VAULTBENCH_VAR_DIR": str(tmp_path),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "marketplace", "worker", "--pool", "solo", "--concurrency", "1",
         "--queues", queue, "--without-heartbeat", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
        env={**env, "DJANGO_SETTINGS_MODULE": "marketplace.settings"},
        cwd=django_settings.BASE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        submission_check_task.apply_async(args=[submission.id], queue=queue)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            submission.refresh_from_db()
            if submission.status != SubmissionStatus.CHECKING:
                break
            time.sleep(0.5)
    finally:
        worker.terminate()
        try:
            output, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
    assert submission.status == SubmissionStatus.EVALUATING, output[-4000:]
    assert Job.objects.filter(submission=submission, site=site.site, status=JobStatus.QUEUED).count() == 1
    assert "submission_check_task" in output and "succeeded" in output
