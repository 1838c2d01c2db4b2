"""Small drivers for the hub's API tests: submissions that reach the sites, agents that report."""

from pathlib import Path

from marketplace.egress.receipts import receipt_of
from marketplace.jobs.models import Job
from marketplace.submissions.models import Submission
from marketplace.submissions.services import submission_check
from tests.conftest import upload

RESULT = {
    "metrics": {"roc_auc": 0.9, "accuracy": 0.8},
    "n_rows": 100,
    "ledger": {"sha256": "b" * 64, "bytes": 50},
}


def submit(persona, task, *, name: str = "m1") -> Submission:
    """Uploads through the API, then runs the hub's check (the Celery task's body) so jobs exist."""
    response = upload(persona, task, name=name)
    assert response.status_code == 201, response.content
    submission_check(submission_id=response.json()["id"])
    return Submission.objects.get(id=response.json()["id"])


def claim(site, agent_id: str = "agent-1") -> dict | None:
    response = site.client.post("/api/v1/agent/jobs/claim", {"agent_id": agent_id})
    assert response.status_code in (200, 204), response.content
    return response.json()["job"] if response.status_code == 200 else None


def with_receipt(body: dict) -> dict:
    """Adds the ledger receipt a real agent sends: the hash of exactly the released body."""
    sha256, size = receipt_of(body)
    return {**body, "ledger": {"sha256": sha256, "bytes": size}}


def post_result(site, job_id: int, *, agent_id: str = "agent-1", **overrides):
    body = {"agent_id": agent_id, **RESULT, **overrides}
    if "ledger" not in overrides:
        body = with_receipt({k: v for k, v in body.items() if k != "ledger"})
    return site.client.post(f"/api/v1/agent/jobs/{job_id}/result", body, format="json")


def job_of(submission: Submission, site) -> Job:
    return Job.objects.get(submission=submission, site=site.site)


def error_code(response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return body["error"]["code"]


def files_under(root) -> list:
    root = Path(root)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
