"""Liveness (the process answers) and readiness (it can serve: database and broker reachable)."""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.db import connections


def check_database() -> str | None:
    """None when a trivial query answers, else the error."""
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


def check_broker(timeout: float = 2.0) -> str | None:
    """None when the Celery broker accepts a connection (Redis) or its folders are writable
    (the embedded filesystem broker), else the error."""
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem://"):
        options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {})
        for key in ("data_folder_in", "processed_folder", "control_folder"):
            folder = Path(options.get(key, ""))
            if not folder.is_dir():
                return f"broker folder {folder} is missing"
            probe = folder / f".readyz-{time.monotonic_ns()}"
            try:
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                return f"broker folder {folder} is not writable: {exc.strerror}"
        return None
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


def readiness() -> dict[str, str]:
    """Each dependency: "ok" or what is wrong with it."""
    return {name: check() or "ok" for name, check in (("database", check_database), ("broker", check_broker))}
