"""Drivers for the portal tests: uploads through the service, sites releasing through the agent API.

A site posts a valid DP release (exact statistics, the task's privacy parameters, a real ledger
receipt) and the hub aggregates it as in production. The pages are then shown chosen values:
`score` sets the pooled metrics the hub would have computed (the aggregation itself is tested in
tests/hub), and `visible` moves a submission's release time into the past.
"""

from datetime import timedelta

from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from marketplace.catalog.models import DataShard
from marketplace.jobs.models import Job
from marketplace.jobs.releases import split_rows
from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.leaderboard.services import leaderboard_aggregate, leaderboard_reveal
from marketplace.submissions.models import Submission
from marketplace.submissions.services import submission_check, submission_create
from tests.conftest import sklearn_like_artifact
from tests.hub.helpers import release_body, with_receipt


def upload_model(persona, task, *, name="m1", is_baseline=False):
    artifact = SimpleUploadedFile("model.joblib", sklearn_like_artifact().getvalue())
    submission = submission_create(
        vendor=persona.organization, task=task, actor=persona.user, name=name, artifact=artifact,
        artifact_format="sklearn", is_baseline=is_baseline,
    )  # fmt: skip
    submission_check(submission_id=submission.id)
    submission.refresh_from_db()
    return submission


def _claim(site_handle, submission) -> int:
    response = site_handle.client.post("/api/v1/agent/jobs/claim", {"agent_id": "agent-1"}, format="json")
    assert response.status_code == 200, response.content
    job = response.json()["job"]
    assert job["id"] == Job.objects.get(submission=submission, site=site_handle.site).id
    return job["id"]


def _rows(site_handle, task, *, private: bool) -> int:
    public, hidden = split_rows(task=task, shard=DataShard.objects.get(task=task, site=site_handle.site))
    return hidden if private else public


def visible(submission, *, ago_seconds: int = 1) -> Submission:
    """The submission's release time has passed (as it does `release_delay_seconds` later)."""
    at = timezone.now() - timedelta(seconds=ago_seconds)
    Submission.objects.filter(id=submission.id).update(results_visible_at=at)
    submission.refresh_from_db()
    return submission


def score(site_handle, submission, metrics: dict | None = None, *, show: bool = True) -> Job:
    """The site claims the submission's job and releases its statistics; once every site has,
    the hub scores it. `metrics`: the pooled values the pages show (per site: the same values);
    `show`: the release time has passed."""
    task = submission.task
    job_id = _claim(site_handle, submission)
    body = with_receipt(release_body(task, n_rows=_rows(site_handle, task, private=False)))
    response = site_handle.client.post(f"/api/v1/agent/jobs/{job_id}/result", body, format="json")
    assert response.status_code == 200, response.content
    leaderboard_aggregate(submission_id=submission.id)  # the Celery task's body (on_commit never fires here)
    entry = LeaderboardEntry.objects.filter(submission_id=submission.id).first()
    if entry is not None and metrics is not None:
        entry.metrics = metrics
        entry.per_site = [{**site, "metrics": metrics} for site in entry.per_site]
        entry.save(update_fields=["metrics", "per_site"])
    if entry is not None and show:
        visible(submission)
    return Job.objects.get(id=job_id)


def fail(site_handle, submission, reason: str = "artifact_mismatch", *, show: bool = True) -> Job:
    """A failure before the model saw any data (the only kind a site posts as a failure)."""
    job_id = _claim(site_handle, submission)
    body = {"agent_id": "agent-1", "reason": reason}
    response = site_handle.client.post(f"/api/v1/agent/jobs/{job_id}/failure", body, format="json")
    assert response.status_code == 200, response.content
    leaderboard_aggregate(submission_id=submission.id)
    if show and Submission.objects.get(id=submission.id).status == "failed":
        visible(submission)
    return Job.objects.get(id=job_id)


def hold(site_handle, submission) -> Job:
    """The site computes the result and holds it for the owner's release (nothing reaches the hub)."""
    job_id = _claim(site_handle, submission)
    response = site_handle.client.post(
        f"/api/v1/agent/jobs/{job_id}/hold", {"agent_id": "agent-1"}, format="json"
    )
    assert response.status_code == 200, response.content
    return Job.objects.get(id=job_id)


def reveal(site_handle, job: Job, metrics: dict | None = None) -> None:
    """After close, the site releases the job's private-split statistics (the finals only)."""
    task = job.submission.task
    body = with_receipt(release_body(task, n_rows=_rows(site_handle, task, private=True)))
    response = site_handle.client.post(f"/api/v1/agent/jobs/{job.id}/private-result", body, format="json")
    assert response.status_code == 200, response.content
    leaderboard_reveal(submission_id=job.submission_id)
    if metrics is not None:
        LeaderboardEntry.objects.filter(submission_id=job.submission_id).update(private_metrics=metrics)
