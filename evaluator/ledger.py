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

Exactly once: an entry is written ahead of its post and carries a ``state``:

    prepared  written, nothing sent yet (the agent may die here: the bytes never left)
    released  handed to the network; the hub may or may not have it
    confirmed the hub answered that it holds it (or the hub's receipts list it)
    voided    it does not count: never sent, or the hub refused it (a superseded attempt)

A change of state is one more line (``{"record": "state", ...}``) naming the entry by
(job id, attempt, sha256); readers fold them, so the file stays append-only. Appending the same
(job id, attempt, sha256) again returns the entry already there instead of a second line.
``spent`` counts every entry not voided. ``evaluator.ledger_reconcile`` compares the ledger with
the hub's receipts and repairs what one side lacks; an entry written before states existed
reads as ``released``. A ``recovered`` entry was rebuilt from the hub's receipt after the site's
ledger was restored from an older copy: its bytes are unknown here (empty payload), its cost is
the hub's.
"""

from __future__ import annotations

import builtins
import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
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
    "attempt",
    "state",
)
_LEGACY_FIELDS = frozenset({"cost_bits"})  # written by older agents; ignored when read
STATES = ("prepared", "released", "confirmed", "voided")
# Allowed moves; anything else is ignored (a state record for a later state arrived first, or a
# repeat). ``confirmed`` may follow ``voided``: the hub's receipts list it after all.
_MOVES = {
    "prepared": {"released", "confirmed", "voided"},
    "released": {"confirmed", "voided"},
    "voided": {"confirmed"},
    "confirmed": set(),
}


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
    attempt: str | None = None  # the claim's attempt token: (job_id, attempt, sha256) names it
    state: str = "released"  # see the module docstring; entries of older agents read as released
    recovered: bool = False  # rebuilt from the hub's receipt: the payload is not known here

    @property
    def key(self) -> tuple[str, str, str]:
        return (str(self.job_id), str(self.attempt or ""), self.sha256)

    @property
    def counts(self) -> bool:
        """Whether it may have left the site (everything but a voided entry)."""
        return self.state != "voided"

    @property
    def is_release_of_statistics(self) -> bool:
        return self.kind == "metrics" and self.rho is not None and self.counts

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
        attempt: str | None = None,
        state: str = "released",
    ) -> LedgerEntry:
        """Writes one entry (write-ahead: ``state="prepared"`` before its post). The same
        (job id, attempt, sha256) again returns the entry already written, in its current state."""
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
            attempt=attempt,
            state=state,
        )
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}")
        return self._write_entry(entry)

    def recover(self, *, job_id: int | str, attempt: str | None, sha256: str, size: int, kind: str,
                task_id: Any, vendor_id: Any, rho: float | None, epsilon: float | None,
                delta: float | None, split: str | None, note: str) -> LedgerEntry:  # fmt: skip
        """An entry rebuilt from the hub's receipt (the site's copy was lost): confirmed, its
        bytes unknown. Idempotent like ``append``."""
        entry = LedgerEntry(
            time=datetime.now(UTC).isoformat().replace("+00:00", "Z"), job_id=job_id, submission_id=None,
            task_id=task_id, kind=kind, payload="", bytes=size, sha256=sha256, epsilon=epsilon,
            vendor_id=vendor_id, rho=rho, delta=delta, split=split, note=note, attempt=attempt,
            state="confirmed", recovered=True,
        )  # fmt: skip
        return self._write_entry(entry)

    def mark(self, key: tuple[str, str, str], state: str, *, why: str = "") -> bool:
        """Moves the entry ``key`` ((job id, attempt, sha256), as ``LedgerEntry.key``) to
        ``state`` (one appended line); False when there is no such entry or the move is not
        allowed from its current state (e.g. a repeat)."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}")
        key = (str(key[0]), str(key[1] or ""), str(key[2]))
        with self._exclusive() as fd:
            current = self._fold(self._read_all(fd)).get(key)
            if current is None or state not in _MOVES[current.state]:
                return False
            record = {
                "record": "state", "job_id": current.job_id, "attempt": current.attempt, "sha256": current.sha256,
                "state": state, "why": why[:200], "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            }  # fmt: skip
            self._write(fd, (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode("ascii"))
        return True

    def _write_entry(self, entry: LedgerEntry) -> LedgerEntry:
        with self._exclusive() as fd:
            existing = self._fold(self._read_all(fd)).get(entry.key)
            if existing is not None:
                return existing
            self._write(fd, entry.to_json_line())
        return entry

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    @staticmethod
    def _write(fd: int, line: builtins.bytes) -> None:
        view = memoryview(line)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)

    def _read_all(self, fd: int) -> list[LedgerEntry | dict[str, Any]]:
        with os.fdopen(os.dup(fd), "rb") as fh:
            fh.seek(0)
            return list(self._parse(fh, verify=False))

    @staticmethod
    def _fold(records: Iterator[LedgerEntry | dict[str, Any]] | list[LedgerEntry | dict[str, Any]]) -> dict:
        """Entries by key, each in its latest state, in the order they were written."""
        entries: dict[tuple[str, str, str], LedgerEntry] = {}
        for record in records:
            if isinstance(record, LedgerEntry):
                entries.setdefault(record.key, record)
                continue
            key = (str(record.get("job_id")), str(record.get("attempt") or ""), str(record.get("sha256")))
            current = entries.get(key)
            state = record.get("state")
            if current is not None and state in _MOVES[current.state]:
                entries[key] = replace(current, state=state)
        return entries

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
        """Every entry once, in the order written, in its latest state."""
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            yield from self._fold(self._parse(fh, verify=verify)).values()

    def _parse(self, fh: IO[builtins.bytes], *, verify: bool) -> Iterator[LedgerEntry | dict[str, Any]]:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if not raw.endswith(b"\n"):
                # A torn last line (crash mid-write without fsync) is not an entry.
                return
            try:
                fields = json.loads(raw)
                if isinstance(fields, dict) and fields.get("record") == "state":
                    yield fields
                    continue
                entry = LedgerEntry(**{k: v for k, v in fields.items() if k not in _LEGACY_FIELDS})
            except (ValueError, TypeError) as exc:
                raise LedgerError(f"{self.path}:{lineno}: not a ledger entry ({exc})") from None
            if verify and not entry.recovered:
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
            row: dict[str, Any] = {k: ("" if v is None else v) for k, v in asdict(entry).items() if k in CSV_FIELDS}
            writer.writerow(row)
            n += 1
        return n

    def export_csv_text(self) -> str:
        buf = io.StringIO()
        self.export_csv(buf)
        return buf.getvalue()
