"""Visitor pages: the task list (search, filters) and a task with its leaderboard and chart."""

import re

import pytest

from marketplace.catalog.services import task_close
from tests.conftest import make_site, make_task, register_shard
from tests.portal.helpers import score, upload_model


@pytest.fixture
def board(owner, vendor, second_vendor):
    site = make_site(owner, "north")
    task = make_task(
        owner, title="Sepsis onset", description="Predict sepsis within six hours.",
        metrics=[{"name": "roc_auc", "decimals": 4}, {"name": "log_loss", "decimals": 2}],
    )  # fmt: skip
    register_shard(site, task, rows=120)
    baseline = upload_model(vendor, task, name="Logistic baseline", is_baseline=True)
    score(site, baseline, {"roc_auc": 0.8, "log_loss": 0.2})
    strong = upload_model(second_vendor, task, name="Boosted trees")
    score(site, strong, {"roc_auc": 0.9, "log_loss": 0.4})
    return task


def test_home_lists_public_tasks_with_search_and_filters(owner, web):
    make_task(owner, title="Sepsis onset")
    make_task(owner, title="Fraud detection", task_type="regression", input_spec={"n_features": 3, "target_range": [0, 1]},
              metrics=[{"name": "r2", "decimals": 3}], primary_metric="r2")  # fmt: skip
    closed = make_task(owner, title="Closed churn")
    task_close(task=closed, actor=owner.user)
    page = web(None).get("/").content.decode()
    assert "Sepsis onset" in page and "Fraud detection" in page and "Closed churn" in page
    page = web(None).get("/?q=sepsis").content.decode()
    assert "Sepsis onset" in page and "Fraud detection" not in page
    page = web(None).get("/?task_type=regression").content.decode()
    assert "Fraud detection" in page and "Sepsis onset" not in page
    page = web(None).get("/?status=closed").content.decode()
    assert "Closed churn" in page and "Sepsis onset" not in page


def test_home_hides_drafts_and_invite_only_tasks_from_visitors(owner, web):
    from marketplace.catalog.services import task_create
    from tests.conftest import TASK_SPEC

    task_create(
        organization=owner.organization, actor=owner.user, spec={**TASK_SPEC, "title": "Secret draft"}
    )
    make_task(owner, title="Members only", visibility="invite_only")
    page = web(None).get("/").content.decode()
    assert "Secret draft" not in page and "Members only" not in page


def test_home_has_labelled_filters(web, db):
    page = web(None).get("/").content.decode()
    for field in ("q", "id_task_type", "id_status"):
        assert re.search(rf'<label for="{field}">', page), field


def test_task_page_shows_description_schema_metrics_rules_and_counts(board, web):
    page = web(None).get(f"/tasks/{board.id}/").content.decode()
    assert "Predict sepsis within six hours." in page
    assert "30 × float32" in page
    assert "roc_auc</strong> (primary) — higher is better, 4 decimals" in page
    assert "log_loss</strong> — lower is better, 2 decimals" in page
    assert "5 per day" in page
    assert "1 site" in page and "120 test rows" in page


def test_leaderboard_ranks_by_the_primary_metric_with_the_policys_decimals(board, web):
    page = web(None).get(f"/tasks/{board.id}/").content.decode()
    assert page.index("Boosted trees") < page.index("Logistic baseline")
    assert "0.9000" in page and "0.8000" in page  # four decimals, even for 0.9
    assert "0.40" in page and "0.20" in page  # two decimals for log_loss
    assert 'aria-sort="descending"' in page


def test_leaderboard_sorts_by_any_metric_in_its_own_direction(board, web):
    page = web(None).get(f"/tasks/{board.id}/?sort=log_loss").content.decode()
    # log_loss is lower-better: the baseline (0.2) now ranks first.
    assert page.index("Logistic baseline") < page.index("Boosted trees")
    assert 'aria-sort="ascending"' in page


def test_leaderboard_marks_baselines_and_shows_vendor_format_size_date(board, web):
    page = web(None).get(f"/tasks/{board.id}/").content.decode()
    row = page[page.index("Logistic baseline") - 300 : page.index("Logistic baseline") + 600]
    assert 'class="baseline"' in row and "Baseline</span>" in row
    assert "Acme Models" in row and "sklearn" in row and "bytes" in row


def test_leaderboard_chart_of_best_score_over_time_is_inline_svg(board, web):
    page = web(None).get(f"/tasks/{board.id}/").content.decode()
    assert '<svg viewBox="0 0 640 220" role="img"' in page
    assert "Best roc_auc over time" in page
    assert "Boosted trees: 0.9000" in page
    assert "<script" not in page.split("<main", 1)[1]  # no chart library


def test_leaderboard_live_part_polls_while_open(board, web):
    part = web(None).get(f"/tasks/{board.id}/leaderboard/?sort=log_loss").content.decode()
    assert 'hx-trigger="every 5s"' in part and "sort=log_loss" in part
    assert "<html" not in part


def test_invite_only_leaderboard_is_hidden_from_vendors_without_access(owner, vendor, web):
    task = make_task(owner, title="Members only", visibility="invite_only")
    page = web(vendor).get(f"/tasks/{task.id}/").content.decode()
    assert "visible to its approved vendors" in page
    assert "Request access for Acme Models" in page


def test_task_page_query_count_does_not_grow_with_the_board(board, web, django_assert_max_num_queries):
    with django_assert_max_num_queries(20):
        web(None).get(f"/tasks/{board.id}/")
