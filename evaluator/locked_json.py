"""A small JSON file that the agents of one site read and rewrite under an exclusive ``flock``.

Several agents share a site's data folder; each read-modify-write of the file happens inside one
lock on ``<file>.lock``, and a rewrite is atomic (a temporary file, fsync, rename), so a crash
leaves the old or the new content, never a torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def locked_json(path: Path, *, write: bool, defaults: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yields the file's content (``defaults`` filled in for missing keys); with ``write`` the
    (possibly changed) content is written back before the lock is released."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        for key, value in defaults.items():
            data.setdefault(key, json.loads(json.dumps(value)))  # a fresh copy of the default
        yield data
        if write:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    finally:
        os.close(lock_fd)
