"""Can this agent take a job now? Checked before every claim, reported with every heartbeat.

An agent whose work folder is full would claim a job and fail it (or stop claiming without a
word, as before): it now claims nothing, says why in its log (once every few minutes, not at
every poll) and in its heartbeat's ``health``, which the hub stores and the owner sees on the
site's page ("cannot work: disk full (...)").
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MiB = 1024 * 1024
OK = "ok"
DISK_FULL = "disk_full"


@dataclass(frozen=True)
class Health:
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_json(self) -> dict[str, str]:
        return {"status": self.status, "detail": self.detail}


def _free_mib(path: Path) -> float:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free / MiB


def check(config: Any) -> Health:
    """``disk_full`` when the work folder or the data folder has less than
    ``config.min_free_disk_mb`` free (a job needs room for its artifact, its copy of the data and
    the sandbox's output; the ledger and state files must be writable)."""
    need = float(getattr(config, "min_free_disk_mb", 0) or 0)
    for name in ("work_dir", "data_dir"):
        path = Path(getattr(config, name))
        try:
            free = _free_mib(path)
        except OSError as exc:
            return Health(DISK_FULL, f"{name} cannot be checked: {exc.strerror}")
        if free < need:
            return Health(DISK_FULL, f"{free:.0f} MiB free in {name}, {need:.0f} MiB needed")
    return Health(OK)


class QuietLog:
    """Says a repeating warning once per ``every`` seconds (and again when it changes).

    ``topic``: what counts as a change where the message carries a moving figure (the free MiB of
    a full disk moves with every file written: the same condition, not a new one)."""

    def __init__(self, every: float = 300.0) -> None:
        self.every = every
        self._said: dict[str, tuple[str, float]] = {}

    def warning(self, key: str, message: str, *, topic: str | None = None) -> bool:
        now = time.monotonic()
        last = self._said.get(key)
        same = topic if topic is not None else message
        if last is not None and last[0] == same and now - last[1] < self.every:
            return False
        self._said[key] = (same, now)
        log.warning("%s", message)
        return True

    def clear(self, key: str, message: str | None = None) -> None:
        if self._said.pop(key, None) is not None and message:
            log.info("%s", message)
