"""Structured logs for the hub and the site agent (no Django): one JSON object per line with
``time``, ``level``, ``logger``, ``message`` and the ids in the current context (``job``, ``site``,
``task``, ``run``, ``submission``, ``agent``, ``request``), plus ``exc`` for a traceback.

    configure(fmt="json")                      # or VAULTBENCH_LOG_FORMAT=json
    with log_context(job=17, task=3):
        log.info("sandbox finished")           # {"job": 17, "task": 3, "message": "sandbox finished", ...}
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

CONTEXT_KEYS = ("job", "site", "task", "run", "submission", "agent", "request")
# Fields an access log line passes with ``extra=``.
EXTRA_KEYS = ("method", "path", "status", "duration_ms")
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("vaultbench_log_context", default={})  # noqa: B039


def current_context() -> dict[str, Any]:
    return dict(_context.get())


def bind(**ids: Any) -> contextvars.Token:
    """Adds ids to the context until ``reset(token)``; ``None`` values are dropped."""
    unknown = set(ids) - set(CONTEXT_KEYS)
    if unknown:
        raise ValueError(f"unknown log context key(s): {', '.join(sorted(unknown))}")
    return _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})


def reset(token: contextvars.Token) -> None:
    _context.reset(token)


@contextlib.contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    token = bind(**ids)
    try:
        yield
    finally:
        reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the context's ids and ``extra=`` ids become fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context.get())
        for key in CONTEXT_KEYS + EXTRA_KEYS:  # logger.info(..., extra={"job": 3}) wins over the context
            if key in record.__dict__:
                entry[key] = record.__dict__[key]
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_format(default: str = "text") -> str:
    value = os.environ.get("VAULTBENCH_LOG_FORMAT", default).strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f"VAULTBENCH_LOG_FORMAT must be text or json, got {value!r}")
    return value


def configure(level: str = "INFO", fmt: str | None = None) -> None:
    """Root logging for a command-line process (the agent): text or JSON lines on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if (fmt or log_format()) == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
