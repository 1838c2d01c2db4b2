"""Drivers for the portal tests: uploads through the service, sites reporting through the agent API."""

from django.core.files.uploadedfile import SimpleUploadedFile

from marketplace.egress.receipts import receipt_of
from marketplace.jobs.models import Job
from marketplace.leaderboard.services import leaderboard_aggregate
from marketplace.submissions.services import submission_check, submission_create
from tests.conftest import sklearn_like_artifact


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


def _with_receipt(body: dict, cost_bits: float | None = None) -> dict:
    sha256, size = receipt_of(body)
    ledger = {"sha256": sha256, "bytes": size}
    if cost_bits is not None:
        ledger["cost_bits"] = cost_bits
    return {**body, "ledger": ledger}


def score(
    site_handle, submission, metrics: dict, *, rows: int = 100, ladder_improved: bool | None = None,
    cost_bits: float | None = None,
) -> Job:  # fmt: skip
    """The site claims the submission's job and reports metrics, with a real ledger receipt."""
    job_id = _claim(site_handle, submission)
    body = {"agent_id": "agent-1", "metrics": metrics, "n_rows": rows}
    if ladder_improved is not None:
        body["ladder_improved"] = ladder_improved
    body = _with_receipt(body, cost_bits)
    response = site_handle.client.post(f"/api/v1/agent/jobs/{job_id}/result", body, format="json")
    assert response.status_code == 200, response.content
    leaderboard_aggregate(submission_id=submission.id)  # the Celery task's body (on_commit never fires here)
    return Job.objects.get(id=job_id)


def fail(site_handle, submission, reason: str = "timeout") -> Job:
    job_id = _claim(site_handle, submission)
    body = {"agent_id": "agent-1", "reason": reason}
    response = site_handle.client.post(f"/api/v1/agent/jobs/{job_id}/failure", body, format="json")
    assert response.status_code == 200, response.content
    leaderboard_aggregate(submission_id=submission.id)
    return Job.objects.get(id=job_id)


def hold(site_handle, submission) -> Job:
    """The site computes the result and holds it for the owner's release (nothing reaches the hub)."""
    job_id = _claim(site_handle, submission)
    response = site_handle.client.post(
        f"/api/v1/agent/jobs/{job_id}/hold", {"agent_id": "agent-1"}, format="json"
    )
    assert response.status_code == 200, response.content
    return Job.objects.get(id=job_id)


def reveal(site_handle, job: Job, metrics: dict, *, rows: int = 50) -> None:
    """After close, the site releases the job's private-split metrics."""
    from marketplace.leaderboard.services import leaderboard_reveal

    body = _with_receipt({"agent_id": "agent-1", "metrics": metrics, "n_rows": rows})
    response = site_handle.client.post(f"/api/v1/agent/jobs/{job.id}/private-result", body, format="json")
    assert response.status_code == 200, response.content
    leaderboard_reveal(submission_id=job.submission_id)
