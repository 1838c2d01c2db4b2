"""Standings: each task's board in rank order, stored when a score arrives rather than ranked on
every read (10,000 entries took 1.2 s a read; issue 13).

A task has two stored boards (LeaderboardStanding), one per audience: the owner's (every entry)
and everyone else's (entries past their release time, Submission.results_visible_at). Each holds,
for each view (best per vendor, all) and each metric, the entry ids in rank order, ranked by the
same code as before (selectors.leaderboard_ranked: the TIE_RULE, Ladder mode), so a rank is a
position in a stored list and a page is a slice of it.

When they are recomputed (standings_refresh):
- in the transaction that scores a submission (there a new entry is inserted instead where the
  tie rule allows: leaderboard.standings_add), reveals a private score or approves reveals
  (leaderboard.services, leaderboard.closing), under a row lock, so two scores arriving together
  both land;
- on a read that finds them stale: an entry not yet on the public board has reached its release
  time (never shown early; shown by the first read after its time: entries on the stored public
  board are marked `on_public_board`, so the check counts the few unmarked ones), the task's
  settings changed (decimals, metrics, mode), or an entry changed outside those services (the
  latest `updated_at`, read from an index). Such a reader stores its own audience's board with a
  conditional update (a concurrent refresh wins; nothing is lost) and answers from what it
  computed.

The private (final) board is not stored: it holds only the finals revealed at close.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime

from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from marketplace.catalog.models import Task, Visibility
from marketplace.catalog.selectors import LISTED_STATUSES
from marketplace.core.parsers import INT64_MAX
from marketplace.leaderboard.models import Audience, LeaderboardEntry, LeaderboardStanding
from marketplace.leaderboard.selectors import (
    ALL,
    RANK_FIELDS,
    VIEWS,
    _best_per_vendor,
    entry_values,
    leaderboard_ranked,
)


def _orders(task: Task, entries: list[dict]) -> dict[str, dict[str, list[int]]]:
    """Per view and metric, the entry ids in rank order: one sort per metric (the best-per-vendor
    view is the first entry of each vendor in the full ranking, as leaderboard_ranked does)."""
    orders: dict[str, dict[str, list[int]]] = {view: {} for view in VIEWS}
    for metric in (m["name"] for m in task.metrics):
        ranked = leaderboard_ranked(task=task, sort_by=metric, view=ALL, entries=entries)
        for view in VIEWS:
            orders[view][metric] = [e["id"] for e in (ranked if view == ALL else _best_per_vendor(ranked))]
    return orders


def _digest(task: Task, orders: dict, entries: list[dict]) -> str:
    """What the audience sees: the ranks, the task's settings and the latest change of its entries."""
    return _digest_of(task, orders, max((e["entry_updated_at"] for e in entries), default=None), len(entries))


def _digest_of(task: Task, orders: dict, latest: datetime | None, count: int) -> str:
    raw = json.dumps([orders, task.updated_at.isoformat(), task.status, latest and latest.isoformat(), count])
    return hashlib.sha256(raw.encode()).hexdigest()


_FIELDS = ["orders", "digest", "version", "changed_at", "computed_at", "task_updated_at", "entries_updated_at",
           "released_unlisted", "next_release_at"]  # fmt: skip


def _recompute(
    row: LeaderboardStanding, *, task: Task, everything: list[dict], now: datetime, changed: bool = False
) -> None:
    """Sets `row` (one audience) from all the task's entries as of `now`; its version moves only
    when what the audience sees changed (or `changed` says so)."""
    if row.audience == Audience.PUBLIC:
        entries = [e for e in everything if e["results_visible_at"] is not None and e["results_visible_at"] <= now]
        upcoming = [e["results_visible_at"] for e in everything
                    if e["results_visible_at"] is not None and e["results_visible_at"] > now]  # fmt: skip
        row.next_release_at = min(upcoming, default=None)
    else:
        entries, row.next_release_at = everything, None
    row.orders = _orders(task, entries)
    digest = _digest(task, row.orders, entries)
    if changed or digest != row.digest:
        row.digest, row.version, row.changed_at = digest, row.version + 1, now
    row.computed_at, row.task_updated_at = now, task.updated_at
    row.released_unlisted = sum(1 for e in entries if not e["on_public_board"]) if row.audience == Audience.PUBLIC else 0
    row.entries_updated_at = max((e["entry_updated_at"] for e in everything), default=None)
    _cache_orders(row)


def _cache_orders(row: LeaderboardStanding) -> None:
    # Readers take the ranks from the cache (no query); the key of a version that rolls back is
    # never asked for (the next version has another changed_at).
    cache.set_many({_orders_key(row, view, metric): ids
                    for view, by_metric in row.orders.items() for metric, ids in by_metric.items()})  # fmt: skip


@transaction.atomic
def standings_refresh(*, task_id: int, now: datetime | None = None, changed: bool = False) -> None:
    """Recomputes both audiences' stored boards of the task, under their row locks (two scores
    arriving together both land: the second waits, then reads the first's entry). `changed`:
    the caller changed what a row shows without changing an entry (a submission nominated as
    final, a vendor renamed): the version moves, so cached answers and ETags do."""
    LeaderboardStanding.objects.bulk_create(
        [LeaderboardStanding(task_id=task_id, audience=a) for a in Audience.values], ignore_conflicts=True
    )
    rows = list(LeaderboardStanding.objects.select_for_update().filter(task_id=task_id))
    task = Task.objects.get(id=task_id)
    now = now or timezone.now()
    everything = entry_values(LeaderboardEntry.objects.filter(task_id=task_id), RANK_FIELDS)
    # The public board's entries are marked, so a reader's freshness check looks at the few
    # unmarked ones only (released since: stale).
    released = {e["id"] for e in everything if e["results_visible_at"] is not None and e["results_visible_at"] <= now}
    marked = {e["id"] for e in everything if e["on_public_board"]}
    if released - marked:
        LeaderboardEntry.objects.filter(id__in=released - marked).update(on_public_board=True)
    if marked - released:
        LeaderboardEntry.objects.filter(id__in=marked - released).update(on_public_board=False)
    for entry in everything:
        entry["on_public_board"] = entry["id"] in released
    for row in rows:
        _recompute(row, task=task, everything=everything, now=now, changed=changed)
    LeaderboardStanding.objects.bulk_update(rows, _FIELDS)


def _orders_key(row: LeaderboardStanding, view: str, metric: str) -> str:
    return f"leaderboard:orders:{standing_etag(row)}:{view}:{metric}"


def standing_order(row: LeaderboardStanding, *, view: str, metric: str) -> list[int]:
    """The entry ids of one view and metric in rank order: from the row when it was just
    recomputed, else the cache, else the database."""
    if "orders" in row.__dict__:
        return row.orders.get(view, {}).get(metric, [])
    ids = cache.get(_orders_key(row, view, metric))
    if ids is None:
        orders = LeaderboardStanding.objects.filter(id=row.id).values_list("orders", flat=True).first() or {}
        ids = orders.get(view, {}).get(metric, [])
    return ids


def standing_of(
    *, task: Task, audience: str, now: datetime | None = None, row: LeaderboardStanding | None = None
) -> LeaderboardStanding:
    """The audience's stored board of `task` (its ranks: standing_order), one query when fresh.

    When stale (the task's settings changed; an entry changed: the latest `updated_at`, from an
    index; public: an entry not on the stored board has reached its release time, which a count
    over those few unmarked entries shows, also when a write bypassed the services, an operator's
    or a test's), this audience's board is recomputed and stored by the reader, unless a
    concurrent refresh got there first (a conditional update on the version: nothing is lost).
    The recomputed row keeps the entries it read in `row.entries` (RankedPage uses them). `row`:
    this audience's row as visitor_standing read it this request (not read again)."""
    now = now or timezone.now()
    if row is None:
        params = [connection.ops.adapt_datetimefield_value(now), task.id, audience]
        row = next(iter(LeaderboardStanding.objects.raw(_freshness_sql(), params)), None)
    if row is None:  # a task scored before standings existed, or never scored
        standings_refresh(task_id=task.id, now=now)
        return standing_of(task=task, audience=audience, now=now)
    stale = (
        row.task_updated_at != task.updated_at
        or not row.entries_seen
        or (audience == Audience.PUBLIC and row.unlisted != row.released_unlisted)
    )
    # One reader per process recomputes; the others answer from the ranks they have (an entry
    # shows a moment after its release time, never before it) instead of all ranking at once.
    lock = f"leaderboard:refreshing:{row.id}"
    if stale and cache.add(lock, 1, timeout=30):
        try:
            _reader_refresh(row, task=task, now=now)
        finally:
            cache.delete(lock)
    return row


@functools.cache
def _freshness_sql(with_task: bool = False) -> str:
    """The standing row (its ranks deferred) with two freshness signals, written out once: the
    ORM spent more time composing this query than the database answering it (a read's hot path).
    `entries_seen`: no entry of the task changed after the last one the row saw (index
    task, updated_at); `unlisted`: released entries not marked on the public board. `with_task`:
    also the task's visibility and status, and whether the ranks follow its settings (visitor_standing)."""
    standing, entry = LeaderboardStanding._meta.db_table, LeaderboardEntry._meta.db_table
    submission = LeaderboardEntry._meta.get_field("submission").related_model._meta.db_table
    fields = ", ".join(f"s.{f}" for f in ["id", "task_id", "audience", *(f for f in _FIELDS if f != "orders")])
    if with_task:
        # Compared here: a raw column outside the model is not converted (SQLite: a string).
        fields += (", t.visibility AS task_visibility, t.status AS task_status, t.metrics AS task_metrics,"
                   " t.primary_metric AS task_primary_metric,"
                   " (s.task_updated_at IS NOT NULL AND t.updated_at = s.task_updated_at) AS settings_seen")  # fmt: skip
    joined = f" INNER JOIN {Task._meta.db_table} t ON t.id = s.task_id" if with_task else ""
    # Only table and column names from the models are formatted in; the values are parameters.
    return (
        f"SELECT {fields}, "  # noqa: S608
        # Two branches, not one OR: with the OR PostgreSQL scanned every entry of the task (15 ms
        # at 10,000) instead of the (task, updated_at) index range.
        f"CASE WHEN s.entries_updated_at IS NULL THEN NOT EXISTS (SELECT 1 FROM {entry} e WHERE e.task_id = s.task_id)"
        f" ELSE NOT EXISTS (SELECT 1 FROM {entry} e WHERE e.task_id = s.task_id"
        f" AND e.updated_at > s.entries_updated_at) END AS entries_seen, "
        f"(SELECT COUNT(*) FROM {entry} e INNER JOIN {submission} u ON u.id = e.submission_id"
        f" WHERE e.task_id = s.task_id AND NOT e.on_public_board AND u.results_visible_at <= %s) AS unlisted "
        f"FROM {standing} s{joined} WHERE s.task_id = %s AND s.audience = %s"
    )


def visitor_standing(*, task_id: int, now: datetime | None = None) -> LeaderboardStanding | None:
    """The public board of a task as a visitor (not logged in) reads it, in one query, when the
    visitor may read it (a public task, open or closed: catalog.selectors.task_list_visible_to);
    None otherwise (the caller takes the full path, which answers 404). `row.fresh`: the stored
    board is fresh (standing_of's signals); where it is not, standing_of(row=) refreshes it."""
    if not 0 < task_id <= INT64_MAX:  # no such task; the raw query would overflow (SQLite)
        return None
    now = now or timezone.now()
    params = [connection.ops.adapt_datetimefield_value(now), task_id, Audience.PUBLIC]
    row = next(iter(LeaderboardStanding.objects.raw(_freshness_sql(with_task=True), params)), None)
    if row is None or row.task_visibility != Visibility.PUBLIC or row.task_status not in LISTED_STATUSES:
        return None
    # Fresh: its task_updated_at is the task's updated_at (board_tag).
    row.fresh = bool(row.settings_seen and row.entries_seen and row.unlisted == row.released_unlisted)
    if isinstance(row.task_metrics, str):  # SQLite: a raw JSON column comes as text
        row.task_metrics = json.loads(row.task_metrics)
    return row


def _reader_refresh(row: LeaderboardStanding, *, task: Task, now: datetime) -> None:
    """Recomputes `row` in place and stores it unless a concurrent refresh stored a newer one."""
    everything = entry_values(LeaderboardEntry.objects.filter(task_id=task.id))
    seen = {"version": row.version, "computed_at": row.computed_at}
    _recompute(row, task=task, everything=everything, now=now)
    LeaderboardStanding.objects.filter(id=row.id, **seen).update(**{f: getattr(row, f) for f in _FIELDS})
    row.entries = {e["id"]: e for e in everything}


def standing_etag(row: LeaderboardStanding) -> str:
    """A short tag for the row's version: the board's ETag and cache key (unique across databases
    that reuse ids: the time of the change is in it)."""
    changed = row.changed_at.isoformat() if row.changed_at else ""
    return hashlib.sha256(f"{row.task_id}:{row.audience}:{row.version}:{changed}".encode()).hexdigest()[:20]


def board_etag(row: LeaderboardStanding, task: Task) -> str:
    """The tag of what a reader of `row` gets: its version and the task's settings as read now
    (a reader that finds a refresh in progress answers from the ranks it has, never from an
    answer cached under settings that changed: per-site values turned off, fewer decimals)."""
    return board_tag(row, task_updated_at=task.updated_at)


def board_tag(row: LeaderboardStanding, *, task_updated_at: datetime) -> str:
    """board_etag from the task's settings' time alone (visitor_standing reads no Task)."""
    return hashlib.sha256(f"{standing_etag(row)}:{task_updated_at.isoformat()}".encode()).hexdigest()[:20]


class RankedPage(Sequence):
    """One view and metric of a stored board as a sequence of ranked entries (dicts with `rank`)
    that reads from the database only the slice asked for: hand it to a paginator. `search` keeps
    the entries whose vendor or model name contains it; ranks stay those of the whole board."""

    def __init__(self, *, task: Task, row: LeaderboardStanding, view: str, metric: str, search: str = ""):
        self.task, self.row = task, row
        ids = standing_order(row, view=view, metric=metric)
        ranked = list(enumerate(ids, start=1))
        needle = (search or "").strip()
        if needle:
            from django.db.models import Q

            matching = set(
                LeaderboardEntry.objects.filter(task_id=task.id)
                .filter(Q(submission__vendor__name__icontains=needle) | Q(submission__name__icontains=needle))
                .values_list("id", flat=True)
            )
            ranked = [(rank, entry_id) for rank, entry_id in ranked if entry_id in matching]
        self.ranked = ranked

    def __len__(self) -> int:
        return len(self.ranked)

    def __getitem__(self, index):
        if not isinstance(index, slice):
            return self[index : index + 1][0]
        part = self.ranked[index]
        by_id = getattr(self.row, "entries", None) or {
            e["id"]: e for e in entry_values(LeaderboardEntry.objects.filter(id__in=[i for _, i in part]))
        }
        # An entry deleted since the ranks were stored drops out (the next refresh renumbers).
        return [{**by_id[entry_id], "rank": rank} for rank, entry_id in part if entry_id in by_id]


def audience_of(*, task: Task, user) -> str:
    """The owner's board for the task's owner, everyone else's for anyone else (visitors included)."""
    from marketplace.accounts.selectors import organization_ids_of
    from marketplace.submissions.visibility import is_task_owner

    if user is not None and getattr(user, "is_authenticated", False):
        if is_task_owner(task=task, org_ids=organization_ids_of(user=user)):
            return Audience.OWNER
    return Audience.PUBLIC
