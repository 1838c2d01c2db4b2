"""Job work folders: locked while an agent uses them, so a restarted agent can tell a dead
agent's leftovers (folder and sandbox containers) from a live one's. The warm sandbox pool's
folder (``pool-*``, evaluator/sandbox_pool.py) and the verified-shard cache's (``shard-*``,
evaluator/shard_cache.py) are locked the same way."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


WORK_LOCK = ".agent.lock"
# A job folder without a lock file yet may be one another agent has just made.
UNLOCKED_GRACE_SECONDS = 120


def claim_work_dir(work: Path) -> int:
    """Locks a job's work folder for as long as this process uses it. The kernel drops the lock
    when the process dies, so a folder whose lock is free belongs to a dead agent."""
    fd = os.open(work / WORK_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def sweep_orphans(work_root: Path, *, remove_containers: Callable[[Path], int] | None = None) -> int:
    """Cleans up after agents that died mid-job (SIGKILL, power loss): their sandbox containers
    and job folders. Folders still locked by a live agent of this site are left alone."""
    if not work_root.is_dir():
        return 0
    if remove_containers is None:
        from evaluator.sandbox import remove_containers_under

        remove_containers = remove_containers_under
    swept = 0
    for work in sorted(work_root.iterdir()):
        if not work.is_dir() or not work.name.startswith(("job-", "run-", "pool-", "shard-")):
            continue
        try:
            fd = os.open(work / WORK_LOCK, os.O_RDWR)
        except FileNotFoundError:
            if time.time() - work.stat().st_mtime < UNLOCKED_GRACE_SECONDS:
                continue
            fd = os.open(work, os.O_RDONLY)  # an old folder without a lock: nobody owns it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            removed = remove_containers(work)
            shutil.rmtree(work, ignore_errors=True)
            log.warning("removed the work folder of a dead agent: %s (%d container(s))", work.name, removed)
            swept += 1
        finally:
            os.close(fd)
    return swept
