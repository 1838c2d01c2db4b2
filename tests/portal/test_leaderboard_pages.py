"""The leaderboard as peers expect it: ⬆/⬇ directions, a stated tie rule, best per vendor with
every submission one click away, search, pagination, downloads, and live updates that send
only what changed. The API: the same board, paginated, with an ETag."""

import csv
import io
import json
import re

import pytest

from marketplace.leaderboard.models import LeaderboardEntry
from tests.conftest import _persona, make_site, make_task, register_shard
from tests.portal.helpers import score, upload_model


@pytest.fixture
def board(owner, vendor, second_vendor):
    """Acme: two models (0.90, 0.80); Globex: one (0.85); a log_loss metric ranks the other way."""
    site = make_site(owner, "north")
    task = make_task(owner, title="Sepsis", quota_per_day=10,
                     metrics=[{"name": "roc_auc", "decimals": 2}, {"name": "log_loss", "decimals": 2}])  # fmt: skip
    register_shard(site, task, rows=120)
    subs = {}
    for persona, name, auc, loss in ((vendor, "acme-strong", 0.9, 0.30), (vendor, "acme-weak", 0.8, 0.10),
                                     (second_vendor, "globex", 0.85, 0.20)):  # fmt: skip
        subs[name] = upload_model(persona, task, name=name)
        score(site, subs[name], {"roc_auc": auc, "log_loss": loss})
    return {"task": task, "site": site, "subs": subs}


def _names(page: str) -> list[str]:
    """Model names of the board's rows, in order."""
    return [n.strip() for n in re.findall(r'data-row="\d+"[^>]*>\s*<td class="num">\d+</td><td>[^<]*</td>\s*<td>([^<]*)', page)]


def test_best_per_vendor_by_default_and_every_submission_one_click_away(board, web):
    page = web(None).get(f"/tasks/{board['task'].id}/").content.decode()
    assert _names(page) == ["acme-strong", "globex"]
    assert 'href="?view=all#leaderboard"' in page and "2 vendors, each with its best submission" in page
    page = web(None).get(f"/tasks/{board['task'].id}/?view=all").content.decode()
    assert _names(page) == ["acme-strong", "globex", "acme-weak"]


def test_arrows_follow_the_convention_with_text_for_screen_readers(board, web):
    page = web(None).get(f"/tasks/{board['task'].id}/").content.decode()
    head = page.split("<thead>", 1)[1].split("</thead>", 1)[0]
    auc, loss = head.split("roc_auc", 1)[1], head.split("log_loss", 1)[1]
    assert "⬆" in auc.split("</th>", 1)[0] and "higher is better" in auc.split("</th>", 1)[0]
    assert "⬇" in loss.split("</th>", 1)[0] and "lower is better" in loss.split("</th>", 1)[0]
    assert "↓" not in head and "↑" not in head


def test_a_lower_is_better_metric_ranks_ascending(board, web):
    page = web(None).get(f"/tasks/{board['task'].id}/?sort=log_loss&view=all").content.decode()
    assert _names(page) == ["acme-weak", "globex", "acme-strong"]


def test_ties_on_the_shown_score_go_to_the_earlier_upload_and_the_rule_is_stated(owner, vendor, second_vendor, web):
    site = make_site(owner, "north")
    task = make_task(owner, metrics=[{"name": "roc_auc", "decimals": 2}])
    register_shard(site, task)
    first = upload_model(vendor, task, name="first")
    score(site, first, {"roc_auc": 0.801})
    second = upload_model(second_vendor, task, name="second")
    score(site, second, {"roc_auc": 0.804})  # higher unrounded, the same as shown (0.80)
    page = web(None).get(f"/tasks/{task.id}/").content.decode()
    assert _names(page) == ["first", "second"]
    assert "earlier upload ranks first" in page.split("data-tie-rule", 1)[1]
    api = web(None).get(f"/api/v1/tasks/{task.id}/leaderboard").json()
    assert [r["model_name"] for r in api["results"]] == ["first", "second"] and "earlier upload" in api["tie_rule"]


def test_search_keeps_the_ranks_of_the_whole_board(board, web):
    page = web(None).get(f"/tasks/{board['task'].id}/?q=GLOB").content.decode()
    assert _names(page) == ["globex"] and '<td class="num">2</td>' in page
    page = web(None).get(f"/tasks/{board['task'].id}/?q=nobody").content.decode()
    assert "No entry matches" in page


def test_the_board_is_paginated(owner, web):
    site = make_site(owner, "north")
    task = make_task(owner, metrics=[{"name": "roc_auc", "decimals": 3}])
    register_shard(site, task)
    for i in range(55):
        persona = _persona(f"v{i}", f"Vendor {i:02d}", "vendor")
        score(site, upload_model(persona, task, name=f"model-{i:02d}"), {"roc_auc": 0.5 + i / 200})
    page = web(None).get(f"/tasks/{task.id}/").content.decode()
    assert page.count("<tr data-row=") == 50 and "Page 1 of 2" in page
    page = web(None).get(f"/tasks/{task.id}/?page=2").content.decode()
    assert page.count("<tr data-row=") == 5 and '<td class="num">55</td>' in page
    api = web(None).get(f"/api/v1/tasks/{task.id}/leaderboard?page=2").json()
    assert api["count"] == 55 and len(api["results"]) == 5 and api["next"] is None and api["previous"]
    assert api["results"][0]["rank"] == 51 and api["task_id"] == task.id and api["view"] == "best"


def test_downloads_hold_the_whole_board_as_the_person_sees_it(board, owner, web):
    response = web(None).get(f"/tasks/{board['task'].id}/leaderboard.csv?view=all")
    assert response["Content-Type"] == "text/csv" and "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [r["model_name"] for r in rows] == ["acme-strong", "globex", "acme-weak"]
    assert rows[0]["roc_auc"] == "0.9" and rows[0]["rank"] == "1"
    data = json.loads(web(None).get(f"/tasks/{board['task'].id}/leaderboard.json").content)
    assert data["count"] == 2 and [r["model_name"] for r in data["results"]] == ["acme-strong", "globex"]
    assert web(None).get(f"/tasks/{board['task'].id}/leaderboard.xml").status_code == 404


def test_downloads_follow_the_release_time_and_invite_only_rules(owner, vendor, outsider, web):
    site = make_site(owner, "north")
    task = make_task(owner, visibility="invite_only", release_delay_seconds=600)
    register_shard(site, task)
    submission = upload_model(vendor, task, name="=HYPERLINK(1)")
    score(site, submission, {"roc_auc": 0.9, "accuracy": 0.8}, show=False)
    assert web(outsider).get(f"/tasks/{task.id}/leaderboard.csv").status_code == 404
    rows = list(csv.DictReader(io.StringIO(web(owner).get(f"/tasks/{task.id}/leaderboard.csv").content.decode())))
    assert rows[0]["model_name"] == "'=HYPERLINK(1)"  # never a formula in a spreadsheet
    public = make_task(owner, release_delay_seconds=600)
    register_shard(site, public)
    pending = upload_model(vendor, public, name="pending")
    score(site, pending, {"roc_auc": 0.9, "accuracy": 0.8}, show=False)
    assert "pending" not in web(vendor).get(f"/tasks/{public.id}/leaderboard.csv").content.decode()


def test_live_update_sends_nothing_while_the_board_is_unchanged(board, second_vendor, web):
    client = web(None)
    page = client.get(f"/tasks/{board['task'].id}/").content.decode()
    version = page.split('data-version="', 1)[1].split('"', 1)[0]
    assert f"since={version}" in page and 'hx-trigger="every 5s"' in page
    unchanged = client.get(f"/tasks/{board['task'].id}/leaderboard/?since={version}")
    assert unchanged.status_code == 204 and unchanged.content == b""
    full = client.get(f"/tasks/{board['task'].id}/leaderboard/")
    assert full.status_code == 200 and full["ETag"]
    assert client.get(f"/tasks/{board['task'].id}/leaderboard/", HTTP_IF_NONE_MATCH=full["ETag"]).status_code == 304
    # A new score changes the version: the poll gets the new table.
    newer = upload_model(second_vendor, board["task"], name="globex-2")
    score(board["site"], newer, {"roc_auc": 0.95, "log_loss": 0.1})
    changed = client.get(f"/tasks/{board['task'].id}/leaderboard/?since={version}")
    assert changed.status_code == 200 and "globex-2" in changed.content.decode()
    assert client.get(f"/tasks/{board['task'].id}/leaderboard/", HTTP_IF_NONE_MATCH=full["ETag"]).status_code == 200


def test_every_board_links_how_scores_are_computed(board, web):
    page = web(None).get(f"/tasks/{board['task'].id}/").content.decode()
    assert 'href="/how-scores-are-computed/"' in page
    doc = web(None).get("/how-scores-are-computed/").content.decode()
    for words in ("adds up the sites", "Gaussian noise", "earlier upload", "higher is better"):
        assert words in doc, words


# --- the API ----------------------------------------------------------------------------------


def test_api_board_is_paginated_with_the_task_level_fields(board, web):
    api = web(None).get(f"/api/v1/tasks/{board['task'].id}/leaderboard?page_size=1").json()
    assert set(api) >= {"count", "next", "previous", "results", "task_id", "primary_metric", "sort", "split",
                        "leaderboard_mode", "view", "tie_rule"}  # fmt: skip
    assert api["count"] == 2 and len(api["results"]) == 1 and "page=2" in api["next"]
    every = web(None).get(f"/api/v1/tasks/{board['task'].id}/leaderboard?view=all&search=acme").json()
    assert [r["model_name"] for r in every["results"]] == ["acme-strong", "acme-weak"]
    assert [r["rank"] for r in every["results"]] == [1, 3]


def test_api_refuses_bad_arguments(board, web):
    client = web(None)
    base = f"/api/v1/tasks/{board['task'].id}/leaderboard"
    for query in ("sort=accuracy", "view=everything", "split=secret", "search=" + "x" * 101):
        response = client.get(f"{base}?{query}")
        assert response.status_code == 400, query
    assert client.get(f"{base}?page=9").status_code == 404


def test_api_answers_304_while_the_board_is_unchanged(board, owner, web):
    client = web(None)
    url = f"/api/v1/tasks/{board['task'].id}/leaderboard"
    first = client.get(url)
    etag = first["ETag"]
    again = client.get(url, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b""
    assert client.get(url + "?view=all", HTTP_IF_NONE_MATCH=etag).status_code == 200  # another view, another tag
    entry = LeaderboardEntry.objects.get(submission=board["subs"]["globex"])
    entry.metrics = {"roc_auc": 0.99, "log_loss": 0.1}
    entry.save(update_fields=["metrics", "updated_at"])
    assert client.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 200  # re-scored: a new tag


def test_api_board_query_count_is_pinned(owner, web, django_assert_max_num_queries):
    site = make_site(owner, "north")
    task = make_task(owner)
    register_shard(site, task)
    for i in range(6):
        persona = _persona(f"q{i}", f"Q {i}", "vendor")
        score(site, upload_model(persona, task, name=f"m{i}"), {"roc_auc": 0.5 + i / 20, "accuracy": 0.5})
    client = web(None)
    with django_assert_max_num_queries(4):
        response = client.get(f"/api/v1/tasks/{task.id}/leaderboard?view=all")
    assert response.json()["count"] == 6
    with django_assert_max_num_queries(8):
        assert client.get(f"/tasks/{task.id}/leaderboard/").status_code == 200
