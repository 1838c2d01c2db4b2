"""The vendor's side of the hub: its personal token and the public API, nothing else.

Decoders read only what this module (and ``transcript``, which polls every vendor endpoint)
returns. A field the API does not show reads as None.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests


@dataclass
class Upload:
    """The hub's answer to an upload: 201 with an id, or a refusal with its error code."""

    status: int
    id: int | None
    code: str | None
    body: Any
    created_at: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 201 and self.id is not None


class VendorApi:
    """HTTP as the vendor: a personal bearer token against the hub's public API."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **params: Any) -> tuple[int, Any]:
        resp = self.session.get(f"{self.base_url}{path}", params=params or None, timeout=30)
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text

    def get_json(self, path: str, **params: Any) -> Any:
        """The decoded body of a 200 answer, or None."""
        status, body = self.get(path, **params)
        return body if status == 200 else None

    def upload(self, task_id: int, artifact: Path, *, name: str, organization: int | None = None) -> Upload:
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
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code == 201 and isinstance(body, dict):
            return Upload(201, int(body["id"]), None, body, body.get("created_at"))
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        return Upload(resp.status_code, None, code, body)

    def create_organization(self, name: str) -> int | None:
        """Self-service: a new vendor organization for the same person (None if refused)."""
        resp = self.session.post(
            f"{self.base_url}/api/v1/organizations", json={"name": name, "kind": "vendor"}, timeout=30
        )
        return int(resp.json()["id"]) if resp.status_code == 201 else None

    def my_vendor_organizations(self) -> list[int]:
        me = self.get_json("/api/v1/me") or {}
        return [int(o["id"]) for o in me.get("organizations", []) if o.get("kind") == "vendor"]

    def submission(self, submission_id: int) -> dict[str, Any] | None:
        return self.get_json(f"/api/v1/submissions/{submission_id}")

    def leaderboard_rows(self, task_id: int) -> dict[int, dict[str, Any]]:
        board = self.get_json(f"/api/v1/tasks/{task_id}/leaderboard?view=all&page_size=200") or {}
        return {int(r["submission_id"]): r for r in board.get("results", board.get("rows", [])) or []}

    def wait_visible(
        self, submission_ids: list[int], *, timeout: float, poll: float = 1.0
    ) -> dict[int, dict]:
        """Until each submission is out of "pending" as the vendor sees it (or the time is up);
        returns the last view of each."""
        views: dict[int, dict] = {}
        pending = set(submission_ids)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for sid in sorted(pending):
                view = self.submission(sid) or {}
                views[sid] = view
                if view.get("status") not in (None, "pending"):
                    pending.discard(sid)
            if pending:
                time.sleep(poll)
        return views
