"""Scores: the sites' metrics averaged weighted by rows, once every site has reported."""

import pytest

from marketplace.leaderboard.aggregation import weighted_metrics
from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.leaderboard.services import leaderboard_aggregate
from tests.conftest import make_site, make_task, register_shard
from tests.hub.helpers import claim, job_of, post_result, submit


@pytest.fixture
def two_sites(owner, site):
    """site-a holds 100 rows, site-b 300 rows of the task."""
    other = make_site(owner, "site-b")
    task = make_task(owner, show_per_site=True, quota_per_day=10)
    register_shard(site, task, rows=100)
    register_shard(other, task, rows=300)
    return task, site, other


def report(site, submission, metrics, n_rows, capture):
    job = job_of(submission, site)
    assert claim(site)["id"] == job.id
    with capture(execute=True):
        response = post_result(site, job.id, metrics=metrics, n_rows=n_rows)
    assert response.status_code == 200, response.content
    return job


def test_weighted_metrics_weights_by_rows():
    assert weighted_metrics([({"auc": 0.9}, 100), ({"auc": 0.5}, 300)]) == pytest.approx({"auc": 0.6})
    with pytest.raises(ValueError):
        weighted_metrics([({"auc": 0.9}, 0)])


def test_leaderboard_aggregates_sites_weighted_by_rows(
    vendor, visitor, two_sites, django_capture_on_commit_callbacks
):
    task, site_a, site_b = two_sites
    submission = submit(vendor, task)
    report(site_a, submission, {"roc_auc": 0.9, "accuracy": 0.8}, 100, django_capture_on_commit_callbacks)
    submission.refresh_from_db()
    assert submission.status == "evaluating" and not LeaderboardEntry.objects.exists()  # site-b still out
    report(site_b, submission, {"roc_auc": 0.5, "accuracy": 0.4}, 300, django_capture_on_commit_callbacks)

    entry = LeaderboardEntry.objects.get(submission=submission)
    assert entry.metrics == pytest.approx({"roc_auc": 0.6, "accuracy": 0.5})
    assert (entry.n_rows, entry.n_sites) == (400, 2)
    submission.refresh_from_db()
    assert submission.status == "scored"
    row = visitor.get(f"/api/v1/tasks/{task.id}/leaderboard").json()["rows"][0]
    assert row["metrics"] == {"roc_auc": 0.6, "accuracy": 0.5}
    assert [(s["site"], s["n_rows"]) for s in row["per_site"]] == [("site-a", 100), ("site-b", 300)]


def test_duplicated_result_does_not_double_count(vendor, two_sites, django_capture_on_commit_callbacks):
    task, site_a, site_b = two_sites
    submission = submit(vendor, task)
    job_a = report(
        site_a, submission, {"roc_auc": 0.9, "accuracy": 0.8}, 100, django_capture_on_commit_callbacks
    )
    with django_capture_on_commit_callbacks(execute=True):
        repeat = post_result(site_a, job_a.id, metrics={"roc_auc": 0.9, "accuracy": 0.8}, n_rows=100)
    assert repeat.json()["created"] is False
    report(site_b, submission, {"roc_auc": 0.5, "accuracy": 0.4}, 300, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        post_result(
            site_b, job_of(submission, site_b).id, metrics={"roc_auc": 0.5, "accuracy": 0.4}, n_rows=300
        )
    leaderboard_aggregate(submission_id=submission.id)
    entry = LeaderboardEntry.objects.get()
    assert entry.n_rows == 400 and entry.n_sites == 2
    assert entry.metrics["roc_auc"] == pytest.approx(0.6)


def test_one_failed_site_fails_the_submission_instead_of_scoring_a_subset(
    vendor, two_sites, django_capture_on_commit_callbacks
):
    task, site_a, site_b = two_sites
    submission = submit(vendor, task)
    report(site_a, submission, {"roc_auc": 0.9, "accuracy": 0.8}, 100, django_capture_on_commit_callbacks)
    job_b = claim(site_b)
    with django_capture_on_commit_callbacks(execute=True):
        site_b.client.post(
            f"/api/v1/agent/jobs/{job_b['id']}/failure", {"agent_id": "agent-1", "reason": "timeout"}
        )
    submission.refresh_from_db()
    assert submission.status == "failed" and submission.status_reason == "timeout"
    assert not LeaderboardEntry.objects.exists()


def test_leaderboard_ranks_in_each_metrics_direction_and_rounds(
    owner, vendor, second_vendor, site, visitor, django_capture_on_commit_callbacks
):
    task = make_task(owner, metrics=[{"name": "roc_auc", "decimals": 2}, {"name": "log_loss", "decimals": 3}],
                     primary_metric="roc_auc")  # fmt: skip
    register_shard(site, task)
    first = submit(vendor, task)
    report(site, first, {"roc_auc": 0.71234, "log_loss": 0.2}, 100, django_capture_on_commit_callbacks)
    second = submit(second_vendor, task)
    report(site, second, {"roc_auc": 0.9, "log_loss": 0.5}, 100, django_capture_on_commit_callbacks)

    board = visitor.get(f"/api/v1/tasks/{task.id}/leaderboard").json()
    assert [r["submission_id"] for r in board["rows"]] == [second.id, first.id]
    assert board["rows"][1]["metrics"] == {"roc_auc": 0.71, "log_loss": 0.2}
    by_loss = visitor.get(f"/api/v1/tasks/{task.id}/leaderboard?sort=log_loss").json()
    assert by_loss["sort"] == "log_loss" and [r["submission_id"] for r in by_loss["rows"]] == [
        first.id,
        second.id,
    ]
    unknown = visitor.get(f"/api/v1/tasks/{task.id}/leaderboard?sort=bogus").json()
    assert unknown["sort"] == "roc_auc"
    assert board["rows"][0]["per_site"] is None  # show_per_site is off


def test_leaderboard_query_count_does_not_grow_with_entries(
    owner, site, visitor, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    from tests.conftest import _persona

    task = make_task(owner)
    register_shard(site, task)
    for i in range(4):
        persona = _persona(f"vendor{i}", f"Vendor {i}", "vendor")
        report(site, submit(persona, task), {"roc_auc": 0.5 + i / 10, "accuracy": 0.5}, 100,
               django_capture_on_commit_callbacks)  # fmt: skip
    with django_assert_max_num_queries(3):
        response = visitor.get(f"/api/v1/tasks/{task.id}/leaderboard")
    assert [r["rank"] for r in response.json()["rows"]] == [1, 2, 3, 4]


def test_visitor_sees_public_leaderboards_only(owner, visitor):
    public = make_task(owner, title="Public")
    invite = make_task(owner, title="Invite", visibility="invite_only")
    from marketplace.catalog.services import task_create
    from tests.conftest import TASK_SPEC

    draft = task_create(
        organization=owner.organization, actor=owner.user, spec={**TASK_SPEC, "title": "Draft"}
    )
    assert visitor.get(f"/api/v1/tasks/{public.id}/leaderboard").status_code == 200
    assert visitor.get(f"/api/v1/tasks/{invite.id}/leaderboard").status_code == 404
    assert visitor.get(f"/api/v1/tasks/{draft.id}/leaderboard").status_code == 404
    assert owner.client.get(f"/api/v1/tasks/{invite.id}/leaderboard").status_code == 200
    assert owner.client.get(f"/api/v1/tasks/{draft.id}/leaderboard").status_code == 200
