"""The agent's small local state: posted job ids, pending bodies, sealed private statistics and
results held for release. Shared safely by the agents of one site's data folder (flock).

Sealed private statistics are EXACT (noise is drawn only when the hub lists the job for a
reveal): the file is as private as the data folder it lives in."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from evaluator.locked_json import locked_json

_DEFAULTS: dict[str, Any] = {
    "posted": [],
    "pending": {},
    "sealed": {},  # private-split statistics, released when the task closes
    "held": {},  # results awaiting the owner's release decision
    "declined": [],  # reveals this site will not make (said once in the log, then kept quiet)
}


class AgentState:
    """Posted job ids and pending bodies, shared safely by agents on one data dir (flock)."""

    def __init__(self, path: str | os.PathLike[str], *, keep_posted: int = 10_000) -> None:
        self.path = Path(path)
        self.keep_posted = keep_posted

    @contextlib.contextmanager
    def _locked(self, *, write: bool) -> Iterator[dict[str, Any]]:
        with locked_json(self.path, write=write, defaults=_DEFAULTS) as data:
            yield data
            data["posted"] = data["posted"][-self.keep_posted :]

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

    def decline(self, job_id: int | str) -> bool:
        """Remembers that this site will not reveal ``job_id``; False if it already knew."""
        with self._locked(write=True) as data:
            if str(job_id) in data["declined"]:
                return False
            data["declined"] = [*data["declined"], str(job_id)][-self.keep_posted :]
            return True

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
