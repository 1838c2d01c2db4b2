"""The vendor's client: one method per thing a vendor does on the hub (``/api/v1``)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

FORMATS = ("torchscript", "sklearn", "onnx", "python_package")
FINAL_STATUSES = frozenset({"scored", "failed", "rejected"})
FAILED_STATUSES = frozenset({"failed", "rejected"})
LEADERBOARD_VIEWS = ("best", "all")
MAX_PAGES = 10_000  # a hub answering an endless chain of `next` links is refused, not followed for ever


class ClientError(Exception):
    """A request the client refuses before sending it, or an answer it cannot use."""


class HubError(ClientError):
    """The hub answered with an error (4xx/5xx): its status, error code, message and details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        self.status, self.code, self.message, self.details = status, code, message, details
        text = f"the hub refused: {status} {message} ({code})"
        if details:
            text += f" {details}"
        super().__init__(text)


class HubUnreachable(ClientError):
    """No answer from the hub (connection refused, DNS, TLS, time-out)."""


class WaitTimeout(ClientError):
    """``wait`` gave up; ``submission`` is the last state the hub showed."""

    def __init__(self, submission: dict, timeout: float) -> None:
        self.submission = submission
        super().__init__(f"still {submission.get('status')} after {timeout:g} s")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Client:
    """A vendor's session with one hub, authenticated by a personal API token (``vbp_...``)."""

    def __init__(self, hub: str, token: str, *, timeout: float = 300, session: requests.Session | None = None):
        if not token:
            raise ClientError("a personal API token is needed (vbp_...; create one on your account page)")
        if not hub.startswith(("http://", "https://")):
            raise ClientError(f"the hub's address must start with http:// or https://, not {hub!r}")
        self.hub = hub.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    # -- transport ---------------------------------------------------------------------------

    def request(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        """One call; ``path_or_url`` is a path under ``/api/v1`` or an absolute ``next`` link."""
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else f"{self.hub}/api/v1{path_or_url}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise HubUnreachable(f"cannot reach the hub at {self.hub}: {exc}") from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise HubError(response.status_code, error["code"], error["message"], error.get("details"))
            except (ValueError, KeyError, TypeError):
                raise HubError(response.status_code, "http_error", response.text[:300].strip()) from None
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"the hub answered {url} with something other than JSON") from None

    def pages(self, path: str, params: dict | None = None) -> Iterator[dict]:
        """Every page of a paginated list, following ``next`` links (``count/next/previous/results``)."""
        page = self.request("GET", path, params=params)
        for _ in range(MAX_PAGES):
            yield page
            next_url = page.get("next") if isinstance(page, dict) else None
            if not next_url:
                return
            if not next_url.startswith(self.hub + "/"):
                # A relative or foreign link: the token goes only to the hub it was given for.
                raise ClientError(f"the hub's next link leaves the hub: {next_url}")
            page = self.request("GET", next_url)
        raise ClientError(f"more than {MAX_PAGES} pages: stopped following next links")

    # -- tasks -------------------------------------------------------------------------------

    def tasks(self, status: str | None = "open") -> list[dict]:
        """Every task you may see (all pages); ``status=None`` for every status."""
        params = {"status": status} if status else {}
        return [task for page in self.pages("/tasks", params) for task in page["results"]]

    def task(self, task_id: int) -> dict:
        return self.request("GET", f"/tasks/{int(task_id)}")

    def quota(self, task_id: int) -> dict:
        """Uploads and privacy budget left to your organization on a task."""
        return self.request("GET", f"/tasks/{int(task_id)}/quota")

    # -- submissions -------------------------------------------------------------------------

    def submit(
        self, task: int, artifact: str | Path, artifact_format: str, name: str, description: str = ""
    ) -> dict:
        """Uploads a model; the hub checks the artifact's format and SHA-256 before it is queued."""
        if artifact_format not in FORMATS:
            raise ClientError(f"unknown format {artifact_format!r}: valid formats are {', '.join(FORMATS)}")
        path = Path(artifact)
        if not path.is_file():
            raise ClientError(f"no such file: {path}")
        sha256 = sha256_of(path)
        with path.open("rb") as handle:
            return self.request(
                "POST",
                "/submissions",
                data={"task": int(task), "name": name, "artifact_format": artifact_format,
                      "description": description, "sha256": sha256},
                files={"artifact": (path.name, handle, "application/octet-stream")},
            )  # fmt: skip

    def status(self, submission_id: int) -> dict:
        """What the hub shows you: "pending" until the release time, then scores or "failed"."""
        return self.request("GET", f"/submissions/{int(submission_id)}")

    def wait(
        self,
        submission_id: int,
        timeout: float = 1800,
        poll_seconds: float = 3,
        on_progress: Callable[[dict, float], None] | None = None,
    ) -> dict:
        """Polls until the submission is scored, failed or rejected and returns it; raises
        ``WaitTimeout`` (carrying the last state) when ``timeout`` seconds pass first.
        ``on_progress(submission, elapsed_seconds)`` is called after every poll."""
        started = time.monotonic()
        while True:
            submission = self.status(submission_id)
            elapsed = time.monotonic() - started
            if on_progress is not None:
                on_progress(submission, elapsed)
            if submission["status"] in FINAL_STATUSES:
                return submission
            if elapsed >= timeout:
                raise WaitTimeout(submission, timeout)
            time.sleep(min(poll_seconds, max(timeout - elapsed, 0.05)))

    def nominate(self, submission_id: int) -> dict:
        """Makes a submission one of your final ones (the private leaderboard)."""
        return self.request("POST", f"/submissions/{int(submission_id)}/nominate")

    # -- leaderboard -------------------------------------------------------------------------

    def leaderboard(
        self, task: int, sort: str | None = None, view: str | None = None, split: str | None = None
    ) -> dict:
        """The task's leaderboard with every page's rows under ``results`` (and the task-level
        fields of the first page). ``sort`` must be one of the task's metrics; ``view="all"``
        lists every submission instead of each vendor's best."""
        params: dict[str, str] = {}
        if sort:
            metrics = [m["name"] for m in self.task(task).get("metrics") or []]
            if sort not in metrics:
                raise ClientError(f"unknown sort key {sort!r}: valid keys are {', '.join(metrics)}")
            params["sort"] = sort
        if view:
            if view not in LEADERBOARD_VIEWS:
                raise ClientError(f"unknown view {view!r}: valid views are {', '.join(LEADERBOARD_VIEWS)}")
            params["view"] = view
        if split:
            params["split"] = split
        board: dict[str, Any] | None = None
        rows: list[dict] = []
        for page in self.pages(f"/tasks/{int(task)}/leaderboard", params):
            if board is None:
                board = {k: v for k, v in page.items() if k not in ("results", "rows", "next", "previous")}
            # The paginated shape lists rows under "results"; hubs before it, under "rows".
            rows.extend(page.get("results", page.get("rows")) or [])
        assert board is not None
        if sort and board.get("sort") not in (None, sort):
            raise ClientError(f"the hub ranked by {board.get('sort')!r}, not {sort!r}")
        board["results"] = rows
        board["count"] = len(rows)
        return board
