"""Long polling of a run's state: a site's ``GET .../state?since=<version>&wait=<s>`` is held
until the run's phase changes, so a phase change reaches the sites within milliseconds instead
of a poll interval.

Why this shape (docs/federated-protocol.md, "Long polling"): the hub runs under gunicorn, where
a held request occupies a worker thread. So a request is held only where the server runs
several threads per process (``wsgi.multithread``: gunicorn ``--threads N``, the gthread worker;
Django's runserver), at most ``VAULTBENCH_FL_STATE_WAITERS`` per process (so a process always
keeps threads for the posts that end the wait), for at most ``VAULTBENCH_FL_STATE_WAIT_SECONDS``.
Otherwise (sync workers, too many waiters) the answer is immediate and the agent falls back to
its poll interval. The wait checks the run's version in the database every
``CHECK_SECONDS`` (phase changes come from any process or host) and wakes at once when a phase
opens in this process.
"""

from __future__ import annotations

import os
import threading
import time

from django.conf import settings

from marketplace.finetuning.models import FineTuningRun

#: How often a held request re-reads the run's version (one primary-key query).
CHECK_SECONDS = 0.01


def _setting(name: str, default: float) -> float:
    """A number from settings, else the environment, else ``default`` (never negative)."""
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name, default)
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return default


def max_wait_seconds() -> float:
    return _setting("VAULTBENCH_FL_STATE_WAIT_SECONDS", 20.0)


def max_waiters() -> int:
    return int(_setting("VAULTBENCH_FL_STATE_WAITERS", 2.0))


_changed = threading.Condition()
_waiters = 0


def run_version(*, status: str, current_round: int, attempt: int, phase: str) -> str:
    """Changes whenever what a site must do changes (status, round, attempt or phase)."""
    return f"{status}.{current_round}.{attempt}.{phase or '-'}"


def _current_version(run_id: int) -> str | None:
    row = FineTuningRun.objects.filter(id=run_id).values_list("status", "current_round", "attempt", "phase").first()
    return None if row is None else run_version(status=row[0], current_round=row[1], attempt=row[2], phase=row[3])


def notify_changed() -> None:
    """Wake this process's held requests (called after a phase change commits)."""
    with _changed:
        _changed.notify_all()


def wait_for_change(*, run_id: int, since: str, wait: float, multithreaded: bool) -> bool:
    """Hold until the run's version differs from ``since`` or ``wait`` seconds passed.

    Returns whether the request was held at all (False: sync worker or too many waiters).
    """
    global _waiters
    wait = min(wait, max_wait_seconds())
    if not multithreaded or wait <= 0:
        return False
    with _changed:
        if _waiters >= max_waiters():
            return False
        _waiters += 1
    try:
        deadline = time.monotonic() + wait
        while True:
            if _current_version(run_id) != since:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            with _changed:
                _changed.wait(min(CHECK_SECONDS, left))
    finally:
        with _changed:
            _waiters -= 1
