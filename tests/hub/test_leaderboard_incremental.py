"""standings_add (a newly scored entry inserted into the stored ranks) against the full
recompute, over random score sequences: after every score, each audience's stored orders, digest
and next release time equal what ranking every entry from scratch gives (so the version moves at
the same scores too). Ties on the value as shown, equal upload times, vendors with several
entries, entries released later, release times coming due, re-scores and settings changes are in
the sequences; the last three take the full path."""

from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketplace.leaderboard.models import Audience, LeaderboardEntry, LeaderboardStanding
from marketplace.leaderboard.selectors import RANK_FIELDS, entry_values
from marketplace.leaderboard.standings import _digest, _orders, standings_refresh
from marketplace.leaderboard.standings_add import standings_add
from marketplace.submissions.models import Submission
from tests.conftest import _persona, make_task

# Values that tie once rounded to the task's decimals (roc_auc: 4, accuracy: 3), and one missing.
ROC_AUC = [0.5, 0.50004, 0.49996, 0.5001, 0.7, 0.9, None]
ACCURACY = [0.8, 0.8004, 0.7996, 0.9, 0.6]

score = st.fixed_dictionaries({
    "kind": st.just("score"),
    "vendor": st.integers(0, 3),
    "roc_auc": st.sampled_from(ROC_AUC),
    "accuracy": st.sampled_from(ACCURACY),
    "uploaded": st.integers(0, 3),  # minutes: equal upload times tie on the submission id
    "released": st.sampled_from([True, True, True, False]),
})  # fmt: skip
other = st.fixed_dictionaries({"kind": st.sampled_from(["rescore", "time_passes", "settings"]),
                               "pick": st.integers(0, 100)})  # fmt: skip
sequences = st.lists(st.one_of(score, score, score, other), min_size=1, max_size=18)


def _expected(task, now):
    """Each audience's board ranked from every entry, as standings_refresh's _recompute does."""
    everything = entry_values(LeaderboardEntry.objects.filter(task_id=task.id), RANK_FIELDS)
    boards = {}
    for audience in Audience.values:
        entries = everything
        if audience == Audience.PUBLIC:
            entries = [e for e in everything if e["results_visible_at"] is not None and e["results_visible_at"] <= now]
        orders = _orders(task, entries)
        boards[audience] = (orders, _digest(task, orders, entries))
    upcoming = [e["results_visible_at"] for e in everything if e["results_visible_at"] and e["results_visible_at"] > now]
    return boards, min(upcoming, default=None)


@pytest.mark.django_db
def test_inserting_each_score_equals_ranking_the_whole_board(owner):
    vendors = [_persona(f"vendor{i}", f"Vendor {i}", "vendor").organization for i in range(4)]
    paths = {"inserted": 0, "recomputed": 0}

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(events=sequences)
    def check(events):
        task = make_task(owner, release_delay_seconds=0, quota_per_day=100)
        base = timezone.now()
        now = base
        standings_refresh(task_id=task.id, now=now)  # the empty board, as a task starts
        entries = []
        for n, event in enumerate(events):
            if event["kind"] == "time_passes":
                now += timedelta(hours=2)  # pending entries come due: the next score recomputes
                continue
            if event["kind"] == "settings":
                metrics = [{"name": "roc_auc", "decimals": 3 + event["pick"] % 2}, {"name": "accuracy", "decimals": 3}]
                type(task).objects.filter(id=task.id).update(metrics=metrics, updated_at=timezone.now())
                task.refresh_from_db()
                standings_refresh(task_id=task.id, now=now)
                continue
            if event["kind"] == "rescore":
                if not entries:
                    continue
                entry = entries[event["pick"] % len(entries)]
                entry.metrics = {"roc_auc": ROC_AUC[event["pick"] % len(ROC_AUC)], "accuracy": 0.75}
                entry.save()
            else:
                released_at = base - timedelta(minutes=10) if event["released"] else base + timedelta(minutes=60)
                submission = Submission.objects.create(
                    vendor=vendors[event["vendor"]], task=task, name=f"model-{n}", artifact="artifacts/x/artifact",
                    artifact_format="sklearn", original_filename="model.joblib", size=100, sha256=f"{n:064x}",
                    status="scored", results_visible_at=released_at,
                )  # fmt: skip
                Submission.objects.filter(id=submission.id).update(created_at=base - timedelta(minutes=event["uploaded"]))
                metrics = {"roc_auc": event["roc_auc"], "accuracy": event["accuracy"]}
                entry = LeaderboardEntry.objects.create(task=task, submission=submission, metrics=metrics, n_rows=100,
                                                        n_sites=1)  # fmt: skip
                entries.append(entry)
            inserted = standings_add(task_id=task.id, entry_id=entry.id, now=now)
            paths["inserted" if inserted else "recomputed"] += 1
            assert not (inserted and event["kind"] == "rescore")
            task.refresh_from_db()
            boards, next_release = _expected(task, now)
            rows = {row.audience: row for row in LeaderboardStanding.objects.filter(task=task)}
            for audience, (orders, digest) in boards.items():
                assert rows[audience].orders == orders, (audience, events[: n + 1])
                assert rows[audience].digest == digest, (audience, events[: n + 1])
            assert rows[Audience.PUBLIC].next_release_at == next_release

    check()
    # Both paths ran (the property holds for the insertion, not only for the fallback).
    assert paths["inserted"] > 50 and paths["recomputed"] > 0, paths


@pytest.mark.django_db
def test_inserting_reads_a_fraction_of_a_large_board(owner, monkeypatch):
    """At 2,000 entries an insertion reads the keys of ~2·√n entries per ranking, not the board."""
    from marketplace.leaderboard import standings_add as module

    vendor = _persona("bulk", "Bulk vendor", "vendor").organization
    task = make_task(owner, release_delay_seconds=0, quota_per_day=100)
    base = timezone.now() - timedelta(days=1)
    submissions = Submission.objects.bulk_create(
        Submission(vendor=vendor, task=task, name=f"m-{i}", artifact="a", artifact_format="sklearn",
                   original_filename="model.joblib", size=1, sha256=f"{i:064x}", status="scored",
                   results_visible_at=base)
        for i in range(2001)
    )  # fmt: skip
    LeaderboardEntry.objects.bulk_create(
        LeaderboardEntry(task=task, submission=s, metrics={"roc_auc": (i * 7919 % 2000) / 2000, "accuracy": 0.5},
                         n_rows=1, n_sites=1)
        for i, s in enumerate(submissions[:-1])
    )  # fmt: skip
    standings_refresh(task_id=task.id)
    newest = LeaderboardEntry.objects.create(task=task, submission=submissions[-1], n_rows=1, n_sites=1,
                                             metrics={"roc_auc": 0.61234, "accuracy": 0.5})  # fmt: skip
    read, keys_of = [], module._keys_of
    monkeypatch.setattr(module, "_keys_of", lambda ids: read.append(len(ids)) or keys_of(ids))
    assert standings_add(task_id=task.id, entry_id=newest.id) is True
    # Two reads; the two audiences' rankings are the same entries here: 2 metrics x (44 + 43) keys.
    assert len(read) == 2 and sum(read) <= 2 * 2 * 90, read
    boards, _ = _expected(task, timezone.now())
    for row in LeaderboardStanding.objects.filter(task=task):
        assert (row.orders, row.digest) == boards[row.audience], row.audience
