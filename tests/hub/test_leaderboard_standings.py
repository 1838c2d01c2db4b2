"""Standings: ranks stored in the transaction that scores a submission, read page by page; the
public board follows each entry's release time; answers cached per board version, audience and
query, with ETag and Last-Modified (issue 13)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.http import http_date

from marketplace.leaderboard.models import Audience, LeaderboardStanding
from marketplace.leaderboard.selectors import VIEWS, leaderboard_entries, leaderboard_ranked
from marketplace.leaderboard.standings import standing_of, standing_order
from tests.conftest import _persona, make_task, register_shard
from tests.hub.helpers import claim, job_of, post_result, submit


def _score(site, submission, capture, correct: float):
    job = job_of(submission, site)
    assert claim(site)["id"] == job.id
    with capture(execute=True):
        response = post_result(site, job.id, n_rows=100, correct=correct)
    assert response.status_code == 200, response.content


@pytest.fixture
def board(owner, site, django_capture_on_commit_callbacks):
    """Four vendors' models scored through the real flow (agent post -> aggregation); no delay."""
    task = make_task(owner, release_delay_seconds=0, quota_per_day=10)
    register_shard(site, task)
    for i in range(4):
        persona = _persona(f"vendor{i}", f"Vendor {i}", "vendor")
        _score(site, submit(persona, task, name=f"model-{i}"), django_capture_on_commit_callbacks, 0.5 + i / 10)
    return task


def test_ranks_are_stored_with_the_score_as_the_board_ranks_them(board):
    rows = {row.audience: row for row in LeaderboardStanding.objects.filter(task=board)}
    assert set(rows) == {Audience.OWNER, Audience.PUBLIC}
    entries = leaderboard_entries(task=board)
    for view in VIEWS:
        for metric in (m["name"] for m in board.metrics):
            expected = [e["id"] for e in leaderboard_ranked(task=board, sort_by=metric, view=view, entries=entries)]
            assert rows[Audience.PUBLIC].orders[view][metric] == expected and len(expected) == 4


def test_a_read_pages_through_stored_ranks_without_ranking(board, visitor, django_assert_max_num_queries):
    computed = LeaderboardStanding.objects.get(task=board, audience=Audience.PUBLIC).computed_at
    with django_assert_max_num_queries(3):
        page = visitor.get(f"/api/v1/tasks/{board.id}/leaderboard?view=all&page_size=2&page=2").json()
    assert page["count"] == 4 and [r["rank"] for r in page["results"]] == [3, 4]
    assert [r["model_name"] for r in page["results"]] == ["model-1", "model-0"]
    with django_assert_max_num_queries(2):  # the same page again: the cached answer
        assert visitor.get(f"/api/v1/tasks/{board.id}/leaderboard?view=all&page_size=2&page=2").json() == page
    assert LeaderboardStanding.objects.get(task=board, audience=Audience.PUBLIC).computed_at == computed


def test_a_new_score_moves_the_version_and_replaces_the_cached_page(
    board, site, visitor, django_capture_on_commit_callbacks
):
    url = f"/api/v1/tasks/{board.id}/leaderboard"
    first = visitor.get(url)
    assert visitor.get(url, HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304
    newcomer = _persona("newcomer", "Newcomer", "vendor")
    _score(site, submit(newcomer, board, name="the-best"), django_capture_on_commit_callbacks, 0.99)
    again = visitor.get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 200 and again["ETag"] != first["ETag"]
    assert again.json()["results"][0]["model_name"] == "the-best" and again.json()["count"] == 5


def test_last_modified_answers_if_modified_since(board, visitor):
    url = f"/api/v1/tasks/{board.id}/leaderboard"
    first = visitor.get(url)
    assert first["Last-Modified"]
    assert visitor.get(url, HTTP_IF_MODIFIED_SINCE=first["Last-Modified"]).status_code == 304
    earlier = http_date((timezone.now() - timedelta(days=1)).timestamp())
    assert visitor.get(url, HTTP_IF_MODIFIED_SINCE=earlier).status_code == 200


def test_an_entry_reaches_the_public_board_at_its_release_time_never_before(
    owner, vendor, site, visitor, django_capture_on_commit_callbacks
):
    task = make_task(owner, release_delay_seconds=600)
    register_shard(site, task)
    submission = submit(vendor, task, name="pending-model")
    _score(site, submission, django_capture_on_commit_callbacks, 0.9)
    submission.refresh_from_db()
    url = f"/api/v1/tasks/{task.id}/leaderboard"
    # The owner reads first (its answer is cached): the visitor's answer is another one.
    assert owner.client.get(url).json()["count"] == 1
    public = visitor.get(url)
    assert public.json()["count"] == 0 and "pending-model" not in public.content.decode()
    page = visitor.get(f"/tasks/{task.id}/").content.decode()
    assert "pending-model" not in page
    stored = LeaderboardStanding.objects.get(task=task, audience=Audience.PUBLIC)
    assert stored.next_release_at == submission.results_visible_at and stored.orders["all"]["roc_auc"] == []
    # Just before the release time the public board is still empty; from it on, it holds the entry.
    before = standing_of(task=task, audience=Audience.PUBLIC, now=submission.results_visible_at - timedelta(seconds=1))
    assert standing_order(before, view="all", metric="roc_auc") == []
    after = standing_of(task=task, audience=Audience.PUBLIC, now=submission.results_visible_at)
    assert standing_order(after, view="all", metric="roc_auc") == [submission.leaderboard_entry.id]
    assert after.version > stored.version and after.next_release_at is None


def test_per_site_values_stay_hidden_from_visitors_after_the_owner_read_the_same_page(
    owner, vendor, site, visitor, django_capture_on_commit_callbacks
):
    task = make_task(owner, release_delay_seconds=0, show_per_site=False)
    register_shard(site, task)
    _score(site, submit(vendor, task), django_capture_on_commit_callbacks, 0.8)
    url = f"/api/v1/tasks/{task.id}/leaderboard"
    assert owner.client.get(url).json()["results"][0]["per_site"]
    assert visitor.get(url).json()["results"][0]["per_site"] is None
    assert "site-a" not in visitor.get(f"/tasks/{task.id}/").content.decode()


def test_a_settings_change_re_ranks_the_board(board, owner, visitor):
    """Decimals decide ties (TIE_RULE): the stored ranks follow the task's settings."""
    from marketplace.catalog.models import Task

    url = f"/api/v1/tasks/{board.id}/leaderboard?sort=accuracy"
    before = visitor.get(url).json()
    Task.objects.filter(id=board.id).update(metrics=[{"name": "roc_auc", "decimals": 4}], primary_metric="roc_auc",
                                            updated_at=timezone.now())  # fmt: skip
    assert visitor.get(url).status_code == 400  # accuracy is gone: the task's settings are read fresh
    after = visitor.get(f"/api/v1/tasks/{board.id}/leaderboard").json()
    assert after["count"] == before["count"] == 4 and after["primary_metric"] == "roc_auc"


@pytest.mark.django_db(transaction=True)
def test_scores_arriving_together_all_land_on_the_stored_board(owner, site, monkeypatch):
    """Each scoring transaction refreshes the standings under their row lock: the one that waits
    reads the other's entry (PostgreSQL: row locks; SQLite: one writer at a time)."""
    import threading

    from django.db import connections

    from marketplace.leaderboard.services import leaderboard_aggregate

    monkeypatch.setattr("marketplace.leaderboard.tasks.enqueue_aggregation", lambda submission_id: None)
    task = make_task(owner, release_delay_seconds=0, quota_per_day=20)
    register_shard(site, task)
    submissions = []
    for i in range(6):
        persona = _persona(f"racer{i}", f"Racer {i}", "vendor")
        submission = submit(persona, task, name=f"racer-{i}")
        job = job_of(submission, site)
        assert claim(site)["id"] == job.id
        assert post_result(site, job.id, n_rows=100, correct=0.5 + i / 20).status_code == 200
        submissions.append(submission)
    assert not LeaderboardStanding.objects.filter(task=task).exists()  # nothing scored yet
    barrier, errors = threading.Barrier(len(submissions)), []

    def score(submission_id: int) -> None:
        try:
            barrier.wait()
            leaderboard_aggregate(submission_id=submission_id)
        except Exception as exc:  # collected: a thread's exception would otherwise vanish
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=score, args=(s.id,)) for s in submissions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    for row in LeaderboardStanding.objects.filter(task=task):
        assert len(row.orders["all"]["roc_auc"]) == 6, row.audience


def _answer(response) -> tuple[int, bytes, dict]:
    return response.status_code, response.content, {k: v for k, v in response.items() if k != "Date"}


def test_a_visitor_reads_a_cached_page_in_one_query_with_the_full_paths_answer(
    board, visitor, django_assert_max_num_queries
):
    """The visitor fast path (LeaderboardApi.get, before the access funnel): the same bytes and headers as the answer
    the full path cached, one query for the answer and for the 304."""
    url = f"/api/v1/tasks/{board.id}/leaderboard?view=all&page_size=2"
    full = visitor.get(url)  # the full path: checks access, ranks the page, caches it
    with django_assert_max_num_queries(1):
        fast = visitor.get(url)
    assert _answer(fast) == _answer(full) and fast.json()["count"] == 4
    with django_assert_max_num_queries(1):
        assert visitor.get(url, HTTP_IF_NONE_MATCH=full["ETag"]).status_code == 304
    with django_assert_max_num_queries(1):
        assert visitor.get(url, HTTP_IF_MODIFIED_SINCE=full["Last-Modified"]).status_code == 304


def test_the_visitor_fast_path_keeps_the_full_paths_refusals(board, owner, visitor):
    """A query never answered at this version (400 stays 400, also with a validator), and a task
    that stopped being readable by visitors: nothing from the cache."""
    from marketplace.catalog.models import Task, TaskStatus, Visibility

    url = f"/api/v1/tasks/{board.id}/leaderboard"
    first = visitor.get(url)
    assert first.status_code == 200
    bad = f"{url}?sort=nonsense"
    assert visitor.get(bad, HTTP_IF_MODIFIED_SINCE=first["Last-Modified"]).status_code == 400
    assert visitor.get(f"{url}?split=private", HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 409
    # Changed without touching updated_at (the board stays fresh): the access rule is read anyway.
    Task.objects.filter(id=board.id).update(visibility=Visibility.INVITE_ONLY)
    assert visitor.get(url).status_code == 404
    assert visitor.get(url, HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 404
    Task.objects.filter(id=board.id).update(visibility=Visibility.PUBLIC, status=TaskStatus.DRAFT)
    assert visitor.get(url).status_code == 404
    Task.objects.filter(id=board.id).update(status=TaskStatus.OPEN)
    assert visitor.get(url).content == first.content
    # The owner, logged in, never gets the visitors' answer (another audience: all entries at once).
    assert owner.client.get(url)["ETag"] != first["ETag"]


def test_a_visitors_poll_of_an_unchanged_board_is_one_query_with_the_full_paths_etag(
    board, vendor, visitor, site, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    """The task page's poll (?since=<version>: 204 while unchanged): a visitor's is answered from
    visitor_standing alone; its ETag is the one the full path gives (a logged-in reader of the
    same public board)."""
    import re

    from django.test import Client

    from marketplace.catalog.models import Task, Visibility

    logged_in = Client()
    logged_in.force_login(vendor.user)  # a session: the portal's full path
    page = visitor.get(f"/tasks/{board.id}/").content.decode()
    version = re.search(r'data-version="([^"]+)"', page).group(1)
    for query in ("", "&sort=accuracy&view=all", "&sort=nonsense&page=2"):
        url = f"/tasks/{board.id}/leaderboard/?since={version}{query}"
        with django_assert_max_num_queries(1):
            fast = visitor.get(url)
        with django_assert_max_num_queries(20) as full_path:
            full = logged_in.get(url)
        assert len(full_path.captured_queries) > 1  # it did take the full path
        assert (fast.status_code, full.status_code) == (204, 204) and fast["ETag"] == full["ETag"], query
    newcomer = _persona("newcomer", "Newcomer", "vendor")
    _score(site, submit(newcomer, board, name="the-best"), django_capture_on_commit_callbacks, 0.99)
    changed = visitor.get(f"/tasks/{board.id}/leaderboard/?since={version}")
    assert changed.status_code == 200 and "the-best" in changed.content.decode()
    Task.objects.filter(id=board.id).update(visibility=Visibility.INVITE_ONLY)
    assert visitor.get(f"/tasks/{board.id}/leaderboard/?since={version}").status_code == 404
    assert visitor.get(f"/tasks/{2**70}/leaderboard/?since={version}").status_code == 404  # no overflow
