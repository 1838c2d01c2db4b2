"""Everything the replay reads from the hub, as the vendor sees it (its personal token only).

This is the one module to change when the vendor API changes. Each function returns plain
values and ``None`` (or an empty list/dict) for whatever the API does not show: the decoders
treat a missing field as "no information", so a channel the API closes recovers 0 bits.

Endpoints read today: ``GET /api/v1/submissions/{id}`` (status, status_reason, per-site jobs),
``GET /api/v1/jobs?submission={id}`` and ``GET /api/v1/jobs/{id}`` (per-site status, result),
``GET /api/v1/tasks/{id}`` (metric decimals), ``GET /api/v1/tasks/{id}/leaderboard`` (released
metrics, n_rows, n_sites, per_site).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

# Statuses after which nothing more changes for a submission (today's names; a renamed or
# coarser status set only needs this tuple).
TERMINAL = ("scored", "failed", "rejected")


@dataclass
class JobView:
    site: str | None
    status: str | None
    reason: str | None
    metrics: dict[str, float] | None = None  # the per-site result, if the vendor sees one
    n_rows: int | None = None


@dataclass
class SubmissionView:
    """One snapshot of what the vendor can see about one submission."""

    id: int
    status: str | None
    reason: str | None
    jobs: list[JobView] = field(default_factory=list)  # empty: no per-site jobs visible
    metrics: dict[str, float] | None = None  # released (aggregate) values, if visible
    n_rows: int | None = None
    n_sites: int | None = None
    per_site: list[dict[str, Any]] | None = None  # leaderboard per-site breakdown, if visible
    visible_fields: list[str] = field(default_factory=list)  # per-site fields seen (for the report)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class VendorApi:
    """HTTP as the vendor: a personal bearer token against the hub's public API."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    # --- raw calls ---------------------------------------------------------------------------

    def get_json(self, path: str, **params: Any) -> Any:
        """The decoded body of a 200 answer, or None for anything else."""
        try:
            resp = self.session.get(f"{self.base_url}{path}", params=params or None, timeout=30)
        except requests.RequestException:
            return None
        if resp.status_code != 200:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    def upload(
        self, task_id: int, artifact: Path, *, name: str, organization: int | None = None
    ) -> tuple[int, int | None]:
        """(HTTP status, submission id or None): a refusal is an answer, not an error."""
        data: dict[str, Any] = {"task": task_id, "name": name, "artifact_format": "python_package"}
        if organization is not None:
            data["organization"] = organization
        with artifact.open("rb") as fh:
            resp = self.session.post(
                f"{self.base_url}/api/v1/submissions",
                data=data,
                files={"artifact": (artifact.name, fh)},
                timeout=120,
            )
        sid = resp.json().get("id") if resp.status_code == 201 else None
        return resp.status_code, (int(sid) if sid is not None else None)

    def create_organization(self, name: str) -> int | None:
        """Self-service: a new vendor organization for the same person (None if refused)."""
        resp = self.session.post(
            f"{self.base_url}/api/v1/organizations", json={"name": name, "kind": "vendor"}, timeout=30
        )
        return int(resp.json()["id"]) if resp.status_code == 201 else None

    def my_vendor_organizations(self) -> list[int]:
        me = self.get_json("/api/v1/me") or {}
        return [int(o["id"]) for o in me.get("organizations", []) if o.get("kind") == "vendor"]

    # --- normalized views ----------------------------------------------------------------------

    def task_decimals(self, task_id: int) -> dict[str, int]:
        task = self.get_json(f"/api/v1/tasks/{task_id}") or {}
        return {m["name"]: int(m.get("decimals", 4)) for m in task.get("metrics", []) if isinstance(m, dict)}

    def leaderboard_row(self, task_id: int, submission_id: int) -> dict[str, Any] | None:
        board = self.get_json(f"/api/v1/tasks/{task_id}/leaderboard") or {}
        for row in board.get("rows", []) or []:
            if row.get("submission_id") == submission_id:
                return row
        return None

    def _job_views(self, submission: dict[str, Any]) -> tuple[list[JobView], list[str]]:
        """Per-site jobs: from the submission's ``jobs``, completed by the job endpoints."""
        seen: list[str] = []
        listed = submission.get("jobs")
        if listed is None:  # no per-site list on the submission: try the job listing
            page = self.get_json("/api/v1/jobs", submission=submission["id"])
            listed = (page.get("results") if isinstance(page, dict) else page) or []
            if listed:
                seen.append("GET /jobs?submission=: per-site jobs")
        elif listed:
            seen.append("submission.jobs[]: site, status, failure_reason")
        views = []
        for job in listed:
            metrics, n_rows = None, None
            result = job.get("result") if "result" in job else None
            if result is None and job.get("id") is not None and job.get("status") == "succeeded":
                detail = self.get_json(f"/api/v1/jobs/{job['id']}") or {}
                result = detail.get("result")
            if isinstance(result, dict) and result.get("metrics"):
                metrics, n_rows = result.get("metrics"), result.get("n_rows")
                if "jobs[].result.metrics" not in seen:
                    seen.append("jobs[].result.metrics")
            views.append(
                JobView(site=job.get("site"), status=job.get("status"), reason=job.get("failure_reason") or None,
                        metrics=metrics, n_rows=n_rows)
            )  # fmt: skip
        return views, seen

    def vendor_view_of(
        self, submission_id: int, *, task_id: int | None = None, results: bool = True
    ) -> SubmissionView:
        """What the vendor sees of one submission now. ``results=False`` skips the leaderboard
        and job-result reads (cheap polling)."""
        body = self.get_json(f"/api/v1/submissions/{submission_id}")
        if not isinstance(body, dict):
            return SubmissionView(id=submission_id, status=None, reason=None)
        view = SubmissionView(
            id=submission_id, status=body.get("status"), reason=body.get("status_reason") or None
        )
        if isinstance(body.get("metrics"), dict):  # should a future API put values on the submission
            view.metrics = body["metrics"]
        if not results:
            view.jobs = [
                JobView(site=j.get("site"), status=j.get("status"), reason=j.get("failure_reason") or None)
                for j in body.get("jobs") or []
            ]
            return view
        view.jobs, view.visible_fields = self._job_views(body)
        task_id = task_id if task_id is not None else body.get("task_id")
        row = self.leaderboard_row(int(task_id), submission_id) if task_id is not None else None
        if row is not None:
            view.metrics = row.get("metrics") or view.metrics
            view.n_rows, view.n_sites = row.get("n_rows"), row.get("n_sites")
            if row.get("per_site"):
                view.per_site = row["per_site"]
                view.visible_fields.append("leaderboard.rows[].per_site")
        return view

    def wait_until_done(self, submission_ids: list[int], *, timeout: float, poll: float = 0.5) -> None:
        """Until each submission is terminal as the vendor sees it (or the time is up: a
        withheld release simply leaves the decoders less to read)."""
        pending = set(submission_ids)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for sid in list(pending):
                if self.vendor_view_of(sid, results=False).terminal:
                    pending.discard(sid)
            if pending:
                time.sleep(poll)


@dataclass
class Transition:
    """When the vendor first saw a status, by monotonic clock."""

    status: str
    at: float


def watch_transitions(
    api: VendorApi, submission_id: int, *, timeout: float, poll: float = 0.15
) -> dict[str, Any]:
    """Polls one submission as fast as a patient vendor would and records, per site and for the
    submission, the first time each status was seen. Returns ``{"submission": [Transition],
    "sites": {site: [Transition]}, "uploaded_at": t0}`` (t0: when polling started)."""
    t0 = time.monotonic()
    record: dict[str, Any] = {"submission": [], "sites": {}, "uploaded_at": t0}
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        view = api.vendor_view_of(submission_id, results=False)
        now = time.monotonic()
        if view.status and (not record["submission"] or record["submission"][-1].status != view.status):
            record["submission"].append(Transition(view.status, now))
        for job in view.jobs:
            if job.site is None or job.status is None:
                continue
            seen = record["sites"].setdefault(job.site, [])
            if not seen or seen[-1].status != job.status:
                seen.append(Transition(job.status, now))
        if view.terminal:
            break
        time.sleep(poll)
    return record
