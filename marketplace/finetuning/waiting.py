"""Long polling of a run's state: a site's ``GET .../state?since=<version>&wait=<s>`` is held
until the run's phase changes, so a phase change reaches the sites within milliseconds instead
of a poll interval.

Why this shape (docs/federated-protocol.md, "Long polling"): the hub runs under gunicorn, where
a held request occupies a worker thread. So a request is held only where the server runs
several threads per process (``wsgi.multithread``: gunicorn ``--threads N``, the gthread worker;
Django's runserver), at most ``VAULTBENCH_FL_STATE_WAITERS`` per process (so a process always
keeps threads for the posts that end the wait), for at most ``VAULTBENCH_FL_STATE_WAIT_SECONDS``.
Otherwise (sync workers, too many waiters) the answer is immediate and the agent falls back to
its poll interval.

How a held request learns of a change: at once when the phase opens in its own process (a
condition variable); within ``SIGNAL_CHECK_SECONDS`` when it opens in another process of this
host (the process that committed it touches a per-run signal file, which waiters ``stat``: a
few microseconds, where a database read costs a query); and within ``CHECK_SECONDS`` when it
opens on another host (the run's version is re-read from the database). Polling the database
every 10 ms from every held request cost the hub more CPU than the posts it waits for.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path

from django.conf import settings

from marketplace.finetuning.models import FineTuningRun

#: How often a held request re-reads the run's version (one primary-key query): changes made on
#: another host of the hub.
CHECK_SECONDS = 0.05
#: How often it looks at the run's signal file (one ``stat``): changes made by another process here.
SIGNAL_CHECK_SECONDS = 0.002


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


@functools.cache
def _signal_dir() -> Path:
    """One folder per hub database on this host (every process of the hub shares it)."""
    db = settings.DATABASES["default"]
    name = hashlib.sha256(f"{db.get('ENGINE')}|{db.get('HOST')}|{db.get('PORT')}|{db.get('NAME')}".encode()).hexdigest()
    folder = Path(tempfile.gettempdir()) / f"vaultbench-fl-signals-{name[:16]}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _signal_stamp(run_id: int) -> int:
    """The signal file's size: one byte longer per change (an mtime can repeat within a tick)."""
    try:
        return os.stat(_signal_dir() / f"run-{int(run_id)}").st_size
    except OSError:
        return -1


def notify_changed(run_id: int | None = None) -> None:
    """Wake the held requests: this process's at once, other processes' of this host through
    the run's signal file (called after a phase change commits)."""
    if run_id is not None:
        try:
            with open(_signal_dir() / f"run-{int(run_id)}", "ab") as signal:
                signal.write(b".")
        except OSError:  # no shared temp folder: the database check still finds the change
            pass
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
        stamp, next_check = _signal_stamp(run_id), 0.0
        while True:
            now = time.monotonic()
            if now >= next_check:  # another host's change; or the signal (below) moved
                if _current_version(run_id) != since:
                    return True
                next_check = now + CHECK_SECONDS
            left = deadline - now
            if left <= 0:
                return True
            with _changed:
                woken = _changed.wait(min(SIGNAL_CHECK_SECONDS, left))
            latest = _signal_stamp(run_id)
            if woken or latest != stamp:
                stamp, next_check = latest, 0.0
    finally:
        with _changed:
            _waiters -= 1
