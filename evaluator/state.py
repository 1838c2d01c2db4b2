"""The agent's small local state: posted job ids, pending bodies, sealed private statistics and
results held for release. Shared safely by the agents of one site's data folder (flock).

Sealed private statistics are EXACT (noise is drawn only when the hub lists the job for a
reveal): the file is as private as the data folder it lives in."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


class AgentState:
    """Posted job ids and pending bodies, shared safely by agents on one data dir (flock)."""

    def __init__(self, path: str | os.PathLike[str], *, keep_posted: int = 10_000) -> None:
        self.path = Path(path)
        self.keep_posted = keep_posted

    @contextlib.contextmanager
    def _locked(self, *, write: bool) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                data = {}
            data.setdefault("posted", [])
            data.setdefault("pending", {})
            data.setdefault("sealed", {})  # private-split statistics, released when the task closes
            data.setdefault("held", {})  # results awaiting the owner's release decision
            yield data
            if write:
                data["posted"] = data["posted"][-self.keep_posted :]
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
        finally:
            os.close(lock_fd)

    def is_posted(self, job_id: int | str) -> bool:
        with self._locked(write=False) as data:
            return str(job_id) in data["posted"]

    def pending(self) -> dict[str, dict[str, Any]]:
        with self._locked(write=False) as data:
            return dict(data["pending"])

    def add_pending(self, key: int | str, kind: str, body: Mapping[str, Any], *, job_id: int | str | None = None) -> None:
        """A body about to be posted. ``key``: the job id, or ``<job id>/private`` for a private
        reveal (a job posts its public result and, later, its private one); ``job_id`` defaults
        to the key."""
        with self._locked(write=True) as data:
            data["pending"][str(key)] = {"kind": kind, "body": dict(body), "job_id": key if job_id is None else job_id}

    def mark_posted(self, job_id: int | str) -> None:
        with self._locked(write=True) as data:
            data["pending"].pop(str(job_id), None)
            if str(job_id) not in data["posted"]:
                data["posted"].append(str(job_id))

    def drop_pending(self, job_id: int | str) -> None:
        with self._locked(write=True) as data:
            data["pending"].pop(str(job_id), None)

    def seal(self, job_id: int | str, release: Mapping[str, Any]) -> None:
        with self._locked(write=True) as data:
            data["sealed"][str(job_id)] = dict(release)

    def sealed(self, job_id: int | str) -> dict[str, Any] | None:
        with self._locked(write=False) as data:
            return data["sealed"].get(str(job_id))

    def unseal(self, job_id: int | str) -> None:
        with self._locked(write=True) as data:
            data["sealed"].pop(str(job_id), None)

    def claim(self, section: str, job_id: int | str, *, owner: str, stale_after: float = 600.0) -> dict[str, Any] | None:
        """Take the right to release a ``held`` or ``sealed`` item, so that two agents of the site
        never both release it (a reveal draws fresh noise: twice would be two releases). Returns
        the item, or None when it is gone or another agent claimed it less than ``stale_after``
        seconds ago (an agent that died mid-release loses its claim then)."""
        with self._locked(write=True) as data:
            item = data[section].get(str(job_id))
            if item is None:
                return None
            claim = item.get("claimed_by")
            if claim and claim.get("owner") != owner and time.time() - float(claim.get("at", 0)) < stale_after:
                return None
            item["claimed_by"] = {"owner": owner, "at": time.time()}
            return dict(item)

    def hold(self, job_id: int | str, release: Mapping[str, Any]) -> None:
        with self._locked(write=True) as data:
            data["held"][str(job_id)] = dict(release)

    def held(self) -> dict[str, dict[str, Any]]:
        with self._locked(write=False) as data:
            return dict(data["held"])

    def decide_held(self, job_id: int | str, decision: str) -> bool:
        """The site operator's own release decision (CLI); the running agent acts on it."""
        with self._locked(write=True) as data:
            if str(job_id) not in data["held"]:
                return False
            data["held"][str(job_id)]["local_decision"] = decision
            return True

    def unhold(self, job_id: int | str) -> None:
        with self._locked(write=True) as data:
            data["held"].pop(str(job_id), None)
