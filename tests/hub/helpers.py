"""Small drivers for the hub's API tests: submissions that reach the sites, agents that report."""

from pathlib import Path

import numpy as np

from evaluator.privacy.statistics import sufficient_statistics
from marketplace.budgets.costs import release_cost
from marketplace.egress.receipts import receipt_of
from marketplace.jobs.models import Job
from marketplace.jobs.releases import release_spec
from marketplace.submissions.models import Submission
from marketplace.submissions.services import submission_check
from tests.conftest import upload


def release_body(
    task, *, n_rows: int = 100, correct: float = 0.8, agent_id: str = "agent-1", **overrides
) -> dict:
    """A metrics post as an honest site sends it (docs/disclosure.md), without its receipt: exact
    (un-noised, hence plausible) statistics of a model that gets ``correct`` of the rows right, and
    the task's privacy parameters."""
    spec = release_spec(task)
    rho, epsilon, delta = release_cost(task)
    k = spec.n_classes or 2
    if spec.task_type == "regression":
        lo, hi = spec.target_range
        y = np.linspace(lo, hi, n_rows)
        predictions = y + (1 - correct) * (hi - lo) / 2
    else:
        y = np.arange(n_rows) % k
        right = np.arange(n_rows) < round(correct * n_rows)
        predicted = np.where(right, y, (y + 1) % k)
        predictions = np.full((n_rows, k), 0.1 / (k - 1))
        predictions[np.arange(n_rows), predicted] = 0.9
    statistics = (
        {b: v.tolist() for b, v in sufficient_statistics(spec, y, predictions).items()} if n_rows else {}
    )
    body = {
        "agent_id": agent_id,
        "n_rows": n_rows,
        "statistics": statistics,
        "privacy": {"mechanism": "gaussian", "rho": rho, "epsilon": epsilon, "delta": delta},
    }
    return {**body, **overrides}


def with_receipt(body: dict, task=None) -> dict:
    """Adds the ledger receipt a real agent sends: the hash of exactly the released body, with the
    release's privacy cost."""
    sha256, size = receipt_of(body)
    privacy = body.get("privacy") if isinstance(body.get("privacy"), dict) else {}
    ledger = {"sha256": sha256, "bytes": size}
    ledger.update({k: privacy[k] for k in ("rho", "epsilon", "delta") if k in privacy})
    return {**body, "ledger": ledger}


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


def post_result(site, job_id: int, *, agent_id: str = "agent-1", private: bool = False, **overrides):
    """Posts a valid release of the job's task (``overrides`` replace fields before the receipt is
    computed, except ``ledger``, which replaces the receipt)."""
    task = Job.objects.get(id=job_id).submission.task
    ledger = overrides.pop("ledger", None)
    body = release_body(task, agent_id=agent_id, **overrides)
    body = with_receipt(body) if ledger is None else {**body, "ledger": ledger}
    path = "private-result" if private else "result"
    return site.client.post(f"/api/v1/agent/jobs/{job_id}/{path}", body, format="json")


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
