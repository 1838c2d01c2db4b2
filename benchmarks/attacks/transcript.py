"""The vendor's full observation transcript, and whether two of them tell anything apart.

A constant channel is one whose observations do not depend on the data. The test: run the same
hostile model (the same bytes) on two data sets that differ only in the secret it reads, poll
every endpoint the vendor can reach while it runs, and compare what came back. ``Poller``
records, per *stream* (one endpoint's answer about one submission, or about one task), each
distinct body and when it first appeared, relative to the submission's upload (its
``created_at``); the interval between the last poll that did not show it yet and the first that
did bounds the true change time. Two transcripts are *identical* when every stream went through
the same bodies and each change's two intervals overlap (one change time fits both): then the
vendor, polling as fast as it likes, cannot tell the secrets apart, and the channel carries 0
bits.

Bodies are compared after ``normalize``: values that differ between any two runs whatever the
data (ids, the slug, absolute times) become symbols or times relative to the upload, and the
DP-noised values (metrics, per-site metrics, the rank they induce, the leakage view's byte count
of the released JSON) become ``"<dp>"``; those are the priced release, measured by the metric
channel instead.

Streams polled per submission (each on a task of its own; the vendor's personal token, nothing
else): ``GET /submissions/{id}``, ``GET /submissions?task=``, its item (or absence) in
``GET /submissions?status=`` for every status the filter knows, ``GET /tasks/{t}/leaderboard``,
``GET /tasks/{t}/leakage`` (the vendor's own spending), ``GET /tasks/{t}/quota`` (quota and
privacy budget), ``GET /tasks/{t}``, ``GET /jobs``, ``GET /jobs?task=``, ``GET /jobs?submission=``
and ``GET /jobs/{job}`` for each of its real job ids (the replay looks them up; a vendor would
guess them).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests

DP = "<dp>"
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?$")
_ID_KEYS = {"id", "submission_id", "parent_id", "parent_submission_id"}
_TASK_KEYS = {"task_id", "task"}
# Values computed from the DP-noised statistics (post-processing of the priced release): the
# metrics, per-site values, the rank they induce, and the leakage view's byte count of the
# released JSON (its length follows the noised numbers' digits).
_DP_KEYS = {"metrics", "private_metrics", "per_site", "bytes"}
# Every status the submission list can be filtered on (SubmissionFilter), plus one it refuses.
STATUS_FILTERS = ("checking", "rejected", "awaiting_approval", "evaluating", "scored", "failed", "pending")


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Tracked:
    """One submission under watch: ``label`` prefixes its streams (unique), ``symbol`` is what
    its id reads as in bodies (the same in both runs: the same model)."""

    label: str
    symbol: str
    submission_id: int
    task_id: int
    created_at: float  # epoch seconds, the hub's created_at
    job_ids: list[tuple[str, int]] = field(default_factory=list)  # (site, job id)
    quiet: int = 0  # rounds since it was last seen to change, once visible
    done: bool = False  # visible and settled: no longer polled


def _mask_numbers(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return DP
    if isinstance(value, Mapping):
        return {k: _mask_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_numbers(v) for v in value]
    return value


def normalize(
    body: Any, *, t0: float, symbols: Mapping[int, str], task_words: set[str], id_is_task: bool = False
) -> Any:
    """``body`` with ids as symbols (submission ids by ``symbols``, task ids as ``"<task>"``;
    ``id_is_task``: the body is a task's), times relative to ``t0`` (ms; ``"<before upload>"``
    for anything earlier, e.g. the task's creation), DP values masked, the task's slug as a
    symbol."""

    def walk(value: Any, key: str | None = None) -> Any:
        if key in _DP_KEYS and value is not None:
            return _mask_numbers(value)
        if key == "rank" and isinstance(value, int):
            return DP  # the order of noised scores
        if isinstance(value, int) and not isinstance(value, bool):
            if key in _TASK_KEYS or (key == "id" and id_is_task):
                return "<task>"
            if key in _ID_KEYS:
                return symbols.get(value, "<id>")
        if isinstance(value, Mapping):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            if value in task_words:
                return "<task>"
            if _ISO.match(value):
                rel = _parse_time(value) - t0
                return "<before upload>" if rel < -1e-3 else f"+{rel:.3f}s"
        return value

    return walk(body)


@dataclass
class Answer:
    status: int
    body: Any
    sent: float  # epoch seconds: the request left
    received: float  # the answer was in


@dataclass
class Seen:
    body: str  # canonical JSON of the normalized answer (status code included)
    first: float  # when the first answer that showed it was in, seconds after the upload
    before: float | None  # when the last request that did not show it was sent (None: first poll)


class Poller:
    """Polls every stream of the tracked submissions in a thread, about every ``interval``
    seconds (a round takes what the hub takes to answer). A submission is polled until it is
    out of "pending" and none of its streams has changed for ``settle`` rounds; the thread ends
    once ``close()`` was called and none is left, or after ``deadline`` seconds. Submissions may
    be added while it runs (``add``). The slow probes (task detail, job list and job details,
    which never change for a vendor) run every ``slow_every`` rounds only."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        interval: float = 1.0,
        settle: int = 3,
        deadline: float = 300.0,
        slow_every: int = 5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.interval, self.settle, self.deadline, self.slow_every = interval, settle, deadline, slow_every
        self.tracked: list[Tracked] = []
        self.symbols: dict[int, str] = {}
        self.task_words: dict[int, set[str]] = {}
        self.streams: dict[str, list[Seen]] = {}
        self.polls = 0
        self.round_seconds: list[float] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[str, float] = {}

    def add(self, tracked: Tracked, *, task_slug: str = "") -> None:
        with self._lock:
            self.tracked.append(tracked)
            self.symbols[tracked.submission_id] = tracked.symbol
            if task_slug:
                self.task_words.setdefault(tracked.task_id, set()).add(task_slug)

    def close(self) -> None:
        """No more submissions will be added: stop once every one is visible and settled."""
        self._closed.set()

    # --- polling ---------------------------------------------------------------------------

    def _get(self, path: str, **params: Any) -> Answer:
        sent = time.time()
        try:
            resp = self.session.get(f"{self.base_url}{path}", params=params or None, timeout=30)
        except requests.RequestException as exc:
            self.errors.append(f"{path}: {exc}")
            return Answer(-1, None, sent, time.time())
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        return Answer(resp.status_code, body, sent, time.time())

    def _record(self, t: Tracked, stream: str, answer: Answer, *, id_is_task: bool = False) -> bool:
        """Adds the answer to the stream; returns whether its body changed. A change's interval
        runs from the sending of the last request that still saw the old body to the receipt of
        the first that saw the new one: the hub's clock, which decided it, read within."""
        words = {w for w in self.task_words.get(t.task_id, set()) if w}
        normal = normalize(
            answer.body, t0=t.created_at, symbols=self.symbols, task_words=words, id_is_task=id_is_task
        )
        text = json.dumps({"status": answer.status, "body": normal}, sort_keys=True)
        name = f"{t.label}: {stream}"
        seen = self.streams.setdefault(name, [])
        changed = not seen or seen[-1].body != text
        if changed:
            seen.append(
                Seen(text, math.ceil((answer.received - t.created_at) * 1000) / 1000, self._last.get(name))
            )
        self._last[name] = math.floor((answer.sent - t.created_at) * 1000) / 1000
        return changed

    def poll_once(self) -> bool:
        """One round over every stream of the submissions still under watch; a submission is
        let go once it is out of "pending" and its streams have not changed for ``settle``
        rounds. Returns whether any is still under watch."""
        with self._lock:
            tracked = [t for t in self.tracked if not t.done]
        if not tracked:
            return False
        slow = self.polls % self.slow_every == 0
        # The list filtered on each status, over all the vendor's submissions (one page holds
        # them all here): a submission's presence in it is a stream of its own.
        by_status = {status: self._get("/api/v1/submissions", status=status, page_size=200)
                     for status in STATUS_FILTERS}  # fmt: skip
        jobs_all = self._get("/api/v1/jobs")
        for t in tracked:
            task = t.task_id
            changed = False
            detail = self._get(f"/api/v1/submissions/{t.submission_id}")
            changed |= self._record(t, "GET /submissions/{id}", detail)
            visible = isinstance(detail.body, dict) and detail.body.get("status") not in (None, "pending")
            changed |= self._record(t, "GET /submissions?task=", self._get("/api/v1/submissions", task=task))
            changed |= self._record(
                t, "GET /tasks/{t}/leaderboard", self._get(f"/api/v1/tasks/{task}/leaderboard")
            )
            changed |= self._record(t, "GET /tasks/{t}/leakage", self._get(f"/api/v1/tasks/{task}/leakage"))
            changed |= self._record(t, "GET /tasks/{t}/quota", self._get(f"/api/v1/tasks/{task}/quota"))
            changed |= self._record(t, "GET /jobs", jobs_all)
            for status, answer in by_status.items():
                body = answer.body
                rows = body.get("results", []) if isinstance(body, dict) else None
                item = (
                    next((r for r in rows if r.get("id") == t.submission_id), None)
                    if rows is not None
                    else body
                )
                changed |= self._record(t, f"its item in GET /submissions?status={status}",
                                        Answer(answer.status, item, answer.sent, answer.received))  # fmt: skip
            if slow:
                changed |= self._record(
                    t, "GET /tasks/{t}", self._get(f"/api/v1/tasks/{task}"), id_is_task=True
                )
                changed |= self._record(t, "GET /jobs?submission=",
                                        self._get("/api/v1/jobs", submission=t.submission_id))  # fmt: skip
                changed |= self._record(t, "GET /jobs?task=", self._get("/api/v1/jobs", task=task))
                for site, job_id in t.job_ids:
                    changed |= self._record(
                        t, f"GET /jobs/{{job at {site}}}", self._get(f"/api/v1/jobs/{job_id}")
                    )
            t.quiet = 0 if (changed or not visible) else t.quiet + 1
            if t.quiet >= self.settle:
                t.done = True
        self.polls += 1
        return True

    def run(self) -> Poller:
        start = time.monotonic()
        while time.monotonic() - start < self.deadline:
            began = time.monotonic()
            busy = self.poll_once()
            if busy:
                self.round_seconds.append(time.monotonic() - began)
            elif self._closed.is_set():
                break
            time.sleep(max(0.0, self.interval - (time.monotonic() - began)))
        return self

    def start(self) -> Poller:
        self._thread = threading.Thread(target=self.run, name="transcript-poller", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> Poller:
        self.close()
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    @property
    def mean_round(self) -> float:
        """The effective poll interval: the mean time between two rounds' starts."""
        if not self.round_seconds:
            return self.interval
        return max(self.interval, sum(self.round_seconds) / len(self.round_seconds))

    # --- reading -----------------------------------------------------------------------------

    def transcript(self, label: str) -> dict[str, list[Seen]]:
        """One submission's streams, named without its label (so that two runs line up)."""
        prefix = f"{label}: "
        return {name[len(prefix) :]: seen for name, seen in self.streams.items() if name.startswith(prefix)}


def compare(
    a: Mapping[str, list[Seen]],
    b: Mapping[str, list[Seen]],
    *,
    ignore: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Whether two transcripts are identical (see the module docstring) over the streams not in
    ``ignore``, and where they differ: a stream that went through other bodies, or a change
    whose two intervals (last poll without it, first poll with it) do not overlap."""
    differences: list[str] = []
    differing: list[str] = []
    for stream in sorted(set(a) | set(b)):
        if stream in ignore:
            continue
        sa, sb = a.get(stream, []), b.get(stream, [])
        bodies_a, bodies_b = [s.body for s in sa], [s.body for s in sb]
        if bodies_a != bodies_b:
            k = next((i for i, (x, y) in enumerate(zip(bodies_a, bodies_b, strict=False)) if x != y),
                     min(len(bodies_a), len(bodies_b)))  # fmt: skip
            differing.append(stream)
            differences.append(
                f"{stream}: body #{k} differs: {bodies_a[k] if k < len(bodies_a) else '(none)'} | "
                f"{bodies_b[k] if k < len(bodies_b) else '(none)'}"
            )
            continue
        for k, (x, y) in enumerate(zip(sa, sb, strict=True)):
            if k == 0:
                continue  # the first poll's body: no change time to compare
            if max(x.before or 0.0, y.before or 0.0) > min(x.first, y.first):
                differing.append(stream)
                differences.append(
                    f"{stream}: change #{k} seen in (+{x.before:.1f}s, +{x.first:.1f}s] vs "
                    f"(+{y.before:.1f}s, +{y.first:.1f}s]"
                )
                break
    compared = sorted((set(a) | set(b)) - set(ignore))
    changes = {
        stream: [{"body": json.loads(s.body), "at": s.first, "after": s.before} for s in seen]
        for stream, seen in a.items()
    }
    return {"identical": not differences, "differences": differences, "differing_streams": sorted(set(differing)),
            "streams": len(compared), "changes": changes}  # fmt: skip


def change_times(seen: Mapping[str, list[Seen]], *, interval: float) -> dict[str, list[float]]:
    """Per stream, the times its body changed (after the first poll), rounded up to the poll
    interval: what a vendor polling every ``interval`` seconds reads."""
    import math

    return {
        stream: [math.ceil(s.first / interval - 1e-9) * interval for s in items[1:]]
        for stream, items in seen.items()
        if len(items) > 1
    }
