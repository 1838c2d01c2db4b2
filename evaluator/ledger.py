"""The site's append-only egress ledger: one JSON line per value released to the hub.

Each entry records the exact bytes that left (``payload``: the canonical JSON of the request
body without its ``ledger`` field), their size and sha256. The result body posted to the hub
carries ``ledger: {"sha256", "bytes"}`` equal to the entry's, so the hub can check it by
recomputing the hash over the canonical JSON of the body minus ``ledger``.

Appends are one ``write`` under an exclusive ``flock`` followed by ``fsync``, so several agents
sharing a data dir never interleave lines, and an acknowledged entry survives a crash.
"""

from __future__ import annotations

import builtins
import csv
import fcntl
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

KINDS = ("metrics", "failure", "update")  # update: a federated masked/plain update (epsilon set)

CSV_FIELDS = (
    "time",
    "job_id",
    "submission_id",
    "task_id",
    "kind",
    "bytes",
    "sha256",
    "vendor_id",
    "cost_bits",
    "epsilon",
    "payload",
)


class LedgerError(Exception):
    """The ledger file is unreadable or an entry does not match its own hash."""


@dataclass(frozen=True)
class LedgerEntry:
    time: str
    job_id: int | str
    submission_id: int | str | None
    task_id: int | str | None
    kind: str
    payload: str  # the exact JSON text that left, ASCII
    bytes: int
    sha256: str
    epsilon: float | None = None  # privacy budget spent (federated updates); None for metrics
    vendor_id: int | str | None = None  # whose job: leakage is totalled per (task, vendor)
    cost_bits: float | None = None  # upper bound on the information released (evaluator.ladder)

    def to_json_line(self) -> builtins.bytes:
        return (json.dumps(asdict(self), sort_keys=True, separators=(",", ":")) + "\n").encode("ascii")


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


class Ledger:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def append(
        self,
        *,
        job_id: int | str,
        submission_id: int | str | None,
        task_id: int | str | None,
        kind: str,
        payload: bytes,
        epsilon: float | None = None,
        vendor_id: int | str | None = None,
        cost_bits: float | None = None,
        now: datetime | None = None,
    ) -> LedgerEntry:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        if not isinstance(payload, bytes):
            raise TypeError("payload must be the exact bytes sent")
        text = payload.decode("ascii")  # canonical JSON is ASCII; anything else is a bug
        entry = LedgerEntry(
            time=(now or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
            job_id=job_id,
            submission_id=submission_id,
            task_id=task_id,
            kind=kind,
            payload=text,
            bytes=len(payload),
            sha256=digest(payload),
            epsilon=epsilon,
            vendor_id=vendor_id,
            cost_bits=cost_bits,
        )
        line = entry.to_json_line()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(line)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        return entry

    def cost_for(self, *, task_id: int | str, vendor_id: int | str) -> float:
        """Bits released so far about this task's data to this vendor, from this site."""
        return sum(
            entry.cost_bits or 0.0
            for entry in self.iter_entries()
            if str(entry.task_id) == str(task_id) and str(entry.vendor_id) == str(vendor_id)
        )

    def read_entries(self, *, verify: bool = True) -> list[LedgerEntry]:
        return list(self.iter_entries(verify=verify))

    def iter_entries(self, *, verify: bool = True) -> Iterator[LedgerEntry]:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                if not raw.endswith(b"\n"):
                    # A torn last line (crash mid-write without fsync) is not an entry.
                    return
                try:
                    entry = LedgerEntry(**json.loads(raw))
                except (ValueError, TypeError) as exc:
                    raise LedgerError(f"{self.path}:{lineno}: not a ledger entry ({exc})") from None
                if verify:
                    payload = entry.payload.encode("ascii")
                    if digest(payload) != entry.sha256 or len(payload) != entry.bytes:
                        raise LedgerError(f"{self.path}:{lineno}: payload does not match its sha256")
                yield entry

    def export_csv(self, out: IO[str] | str | os.PathLike[str]) -> int:
        """Write every entry as CSV; returns the number of entries written."""
        if isinstance(out, str | os.PathLike):
            with open(out, "w", newline="", encoding="utf-8") as fh:
                return self.export_csv(fh)
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
        writer.writeheader()
        n = 0
        for entry in self.iter_entries():
            row: dict[str, Any] = asdict(entry)
            if row["epsilon"] is None:
                row["epsilon"] = ""
            writer.writerow(row)
            n += 1
        return n

    def export_csv_text(self) -> str:
        buf = io.StringIO()
        self.export_csv(buf)
        return buf.getvalue()
