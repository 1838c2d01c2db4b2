"""A newly scored entry inserted into the stored standings instead of ranking the whole board
again (standings_refresh read and ranked 10,000 entries per score: 0.5-1 s in the scoring
transaction, under the standings' row lock; issue 13).

The TIE_RULE makes the order total: an entry's place is fixed by its own score as shown, upload
time and submission id, and no other entry's relative order depends on it. So a new entry goes
where a binary search of the stored order puts it, reading only the keys of the entries it looks
at (a sample every √n places, then the √n between two samples: two queries, ~2√n rows), and the
best-per-vendor view follows from its vendor's other entries. Every other change (settings,
Ladder mode, a re-score, releases that came due, a board not fresh) is a full standings_refresh,
which the result equals (tests/hub/test_leaderboard_incremental.py checks it over random score
sequences).
"""

from __future__ import annotations

import bisect
import math
from datetime import datetime

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from marketplace.catalog.models import LeaderboardMode, Task
from marketplace.leaderboard.models import Audience, LeaderboardEntry, LeaderboardStanding
from marketplace.leaderboard.selectors import ALL, BEST, RANK_FIELDS, VIEWS, _rank_key, entry_values
from marketplace.leaderboard.standings import _FIELDS, _cache_orders, _digest_of, standings_refresh

# What placing an entry reads of it and of the entries it is compared with.
_KEY_FIELDS = ("id", "submission_id", "metrics", "created_at")


@transaction.atomic
def standings_add(*, task_id: int, entry_id: int, now: datetime | None = None) -> bool:
    """Places the newly scored entry `entry_id` on both audiences' stored boards (the public one
    from its release time: until then only its next_release_at), under the rows' locks, as
    standings_refresh would. Where the insertion does not apply, runs standings_refresh: True
    when the entry was inserted, False when the board was recomputed."""
    now = now or timezone.now()
    rows = {row.audience: row for row in LeaderboardStanding.objects.select_for_update().filter(task_id=task_id)}
    task = Task.objects.get(id=task_id)
    found = entry_values(LeaderboardEntry.objects.filter(id=entry_id, task_id=task_id), RANK_FIELDS)
    if not found or not _insertable(task, rows, found[0], now):
        standings_refresh(task_id=task_id, now=now)
        return False
    entry = found[0]
    released = entry["results_visible_at"] is not None and entry["results_visible_at"] <= now
    if entry["on_public_board"] != released:
        LeaderboardEntry.objects.filter(id=entry_id).update(on_public_board=released)
    vendor_entries = set(
        LeaderboardEntry.objects.filter(task_id=task_id, submission__vendor_id=entry["vendor_id"])
        .exclude(id=entry_id)
        .values_list("id", flat=True)
    )
    audiences = [rows[Audience.OWNER]] + ([rows[Audience.PUBLIC]] if released else [])
    _insert(task, audiences, entry, vendor_entries)
    public = rows[Audience.PUBLIC]
    if not released and entry["results_visible_at"] is not None:
        public.next_release_at = min(filter(None, [public.next_release_at, entry["results_visible_at"]]))
    entries_updated_at = max(rows[Audience.OWNER].entries_updated_at, entry["entry_updated_at"])
    latest = {
        Audience.OWNER: entries_updated_at,
        Audience.PUBLIC: LeaderboardEntry.objects.filter(task_id=task_id, on_public_board=True).aggregate(
            latest=Max("updated_at")
        )["latest"],
    }
    names = [m["name"] for m in task.metrics]
    for row in rows.values():
        # In the order standings_refresh builds them (PostgreSQL's jsonb returns its keys sorted):
        # the digest is of their JSON.
        row.orders = {view: {name: row.orders[view][name] for name in names} for view in VIEWS}
        count = len(row.orders[ALL][task.primary_metric])
        digest = _digest_of(task, row.orders, latest[row.audience], count)
        if digest != row.digest:
            row.digest, row.version, row.changed_at = digest, row.version + 1, now
        row.computed_at, row.task_updated_at, row.entries_updated_at = now, task.updated_at, entries_updated_at
        _cache_orders(row)
    LeaderboardStanding.objects.bulk_update(rows.values(), _FIELDS)
    return True


def _insertable(task: Task, rows: dict, entry: dict, now: datetime) -> bool:
    """Both boards stored, fresh and ranked under the task's current settings; the entry new to
    them; no other entry changed or came due for release since (those need a full refresh)."""
    if set(rows) != set(Audience.values) or task.leaderboard_mode == LeaderboardMode.LADDER:
        return False
    names = [m["name"] for m in task.metrics]
    for row in rows.values():
        if row.task_updated_at != task.updated_at or row.entries_updated_at is None:
            return False
        if any(sorted(row.orders.get(view, {})) != sorted(names) for view in VIEWS):
            return False
    if entry["id"] in set(rows[Audience.OWNER].orders[ALL][task.primary_metric]):
        return False  # a re-score: its old place would have to go too
    if rows[Audience.PUBLIC].released_unlisted:
        return False
    others = LeaderboardEntry.objects.filter(task_id=task.id).exclude(id=entry["id"])
    seen = min(row.entries_updated_at for row in rows.values())
    if others.filter(updated_at__gt=seen).exists():
        return False
    return not others.filter(on_public_board=False, submission__results_visible_at__lte=now).exists()


def _insert(task: Task, rows: list[LeaderboardStanding], entry: dict, vendor_entries: set[int]) -> None:
    """Puts `entry` into each row's orders, every metric: its place in the full ranking (ALL),
    and in the best-per-vendor view (BEST) if it now ranks first among its vendor's entries."""
    decimals = {m["name"]: m["decimals"] for m in task.metrics}
    keys = {metric: _rank_key(metric, decimals[metric], "metrics") for metric in decimals}
    lists = [(row, metric) for row in rows for metric in decimals]
    places = _places(lists, entry, keys)
    for (row, metric), place in zip(lists, places, strict=True):
        ranked = row.orders[ALL][metric]
        ranked.insert(place, entry["id"])
        positions = {entry_id: i for i, entry_id in enumerate(ranked)}
        if any(positions.get(other, place) < place for other in vendor_entries):
            continue  # its vendor has a better entry: the best view is unchanged
        best = [i for i in row.orders[BEST][metric] if i not in vendor_entries]
        best.insert(bisect.bisect_left([positions[i] for i in best], place), entry["id"])
        row.orders[BEST][metric] = best


def _places(lists: list[tuple[LeaderboardStanding, str]], entry: dict, keys: dict) -> list[int]:
    """Where `entry` goes in each (row, metric) ranking: how many of its entries rank before it.
    A sample of every √n-th entry's key, then the keys between the two samples around it."""
    orders = [row.orders[ALL][metric] for row, metric in lists]
    steps = [max(1, math.isqrt(len(ids))) for ids in orders]
    sampled = _keys_of({i for ids, step in zip(orders, steps, strict=True) for i in ids[step - 1 :: step]})
    brackets = []
    for (_, metric), ids, step in zip(lists, orders, steps, strict=True):
        key = keys[metric]
        below = bisect.bisect_left([key(sampled[i]) for i in ids[step - 1 :: step]], key(entry))
        brackets.append((below * step, min(len(ids), (below + 1) * step - 1)))
    between = _keys_of({i for ids, (lo, hi) in zip(orders, brackets, strict=True) for i in ids[lo:hi]})
    places = []
    for (_, metric), ids, (lo, hi) in zip(lists, orders, brackets, strict=True):
        key = keys[metric]
        places.append(lo + sum(1 for i in ids[lo:hi] if key(between[i]) < key(entry)))
    return places


def _keys_of(ids: set[int]) -> dict[int, dict]:
    """The ranking fields of these entries, by id (an id the board holds but the table lost would
    fail here: a board not fresh, which _insertable rules out)."""
    if not ids:
        return {}
    return {e["id"]: e for e in entry_values(LeaderboardEntry.objects.filter(id__in=ids), _KEY_FIELDS)}
