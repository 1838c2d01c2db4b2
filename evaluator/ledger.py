"""The site's append-only egress ledger: one JSON line per value released to the hub.

Each entry records the exact bytes that left (``payload``: the canonical JSON of the request
body without its ``ledger`` field), their size and sha256. The result body posted to the hub
carries ``ledger: {"sha256", "bytes", ...}`` equal to the entry's, so the hub can check it by
recomputing the hash over the canonical JSON of the body minus ``ledger``.

Privacy: a release of statistics records the release's ``rho`` (zCDP) and its ``epsilon`` and
``delta`` (the per-release values), and the ``split`` whose rows it is about; totals compose by
summing rho and converting once (``spent``). A federated update records its ``epsilon`` (its own
accountant) and no rho. ``note`` is for the owner only and is not part of what left: e.g. the
true reason a model failed when its fallback statistics were released instead.

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
    "split",
    "rho",
    "epsilon",
    "delta",
    "note",
    "payload",
)
_LEGACY_FIELDS = frozenset({"cost_bits"})  # written by older agents; ignored when read


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
    epsilon: float | None = None  # the release's epsilon at ``delta`` (statistics and updates)
    vendor_id: int | str | None = None  # whose job: budgets are per (task, vendor, split)
    rho: float | None = None  # zCDP cost of a release of statistics; None for updates and failures
    delta: float | None = None
    split: str | None = None  # "public" or "private" for statistics
    note: str = ""  # owner-only, never sent

    @property
    def is_release_of_statistics(self) -> bool:
        return self.kind == "metrics" and self.rho is not None

    def to_json_line(self) -> builtins.bytes:
        return (json.dumps(asdict(self), sort_keys=True, separators=(",", ":")) + "\n").encode("ascii")


@dataclass(frozen=True)
class Spent:
    releases: int
    rho: float
    delta: float

    @property
    def epsilon(self) -> float:
        from evaluator.privacy.zcdp import epsilon_for_rho

        return epsilon_for_rho(self.rho, self.delta) if self.delta < 1 else 0.0


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
        rho: float | None = None,
        delta: float | None = None,
        split: str | None = None,
        note: str = "",
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
            rho=rho,
            delta=delta,
            split=split,
            note=note,
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

    def spent(self) -> dict[tuple[str, str, str], Spent]:
        """Released statistics per (task, vendor, split): the count, the summed rho, and its
        epsilon at the smallest delta among them (zCDP composes by adding rho)."""
        sums: dict[tuple[str, str, str], tuple[int, float, float]] = {}
        for entry in self.iter_entries():
            if not entry.is_release_of_statistics:
                continue
            key = (str(entry.task_id), str(entry.vendor_id), str(entry.split))
            n, rho, delta = sums.get(key, (0, 0.0, 1.0))
            sums[key] = (n + 1, rho + float(entry.rho or 0.0), min(delta, float(entry.delta or 1.0)))
        return {key: Spent(releases=n, rho=rho, delta=delta) for key, (n, rho, delta) in sums.items()}

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
                    fields = json.loads(raw)
                    entry = LedgerEntry(**{k: v for k, v in fields.items() if k not in _LEGACY_FIELDS})
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
            row: dict[str, Any] = {k: ("" if v is None else v) for k, v in asdict(entry).items()}
            writer.writerow(row)
            n += 1
        return n

    def export_csv_text(self) -> str:
        buf = io.StringIO()
        self.export_csv(buf)
        return buf.getvalue()
