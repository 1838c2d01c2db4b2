"""Scores: the sites' released statistics pooled (summed) over all their rows, once every site
has reported; the Ladder on the hub; results shown at a padded time."""

from datetime import timedelta

import pytest

from marketplace.budgets.models import PrivacyBudget, PrivacyCharge
from marketplace.leaderboard.aggregation import ladder_improves
from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.leaderboard.services import leaderboard_aggregate
from marketplace.submissions.services import results_visible_at
from tests.conftest import make_site, make_task, register_shard
from tests.hub.helpers import claim, job_of, post_result, release_body, submit


@pytest.fixture
def two_sites(owner, site):
    """site-a holds 100 rows, site-b 300 rows of the task."""
    other = make_site(owner, "site-b")
    task = make_task(owner, show_per_site=True, quota_per_day=10, release_delay_seconds=0)
    register_shard(site, task, rows=100)
    register_shard(other, task, rows=300)
    return task, site, other


def report(site, submission, n_rows, capture, **release):
    job = job_of(submission, site)
    assert claim(site)["id"] == job.id
    with capture(execute=True):
        response = post_result(site, job.id, n_rows=n_rows, **release)
    assert response.status_code == 200, response.content
    return job


def test_leaderboard_pools_the_sites_statistics_over_all_rows(
    vendor, visitor, two_sites, django_capture_on_commit_callbacks
):
    task, site_a, site_b = two_sites
    submission = submit(vendor, task)
    report(site_a, submission, 100, django_capture_on_commit_callbacks, correct=0.9)
    submission.refresh_from_db()
    assert submission.status == "evaluating" and not LeaderboardEntry.objects.exists()  # site-b still out
    report(site_b, submission, 300, django_capture_on_commit_callbacks, correct=0.5)

    entry = LeaderboardEntry.objects.get(submission=submission)
    # (90 + 150) correct of 400 rows: the accuracy of the pool, not a mean of the sites' accuracies.
    assert entry.metrics["accuracy"] == pytest.approx(240 / 400)
    assert (entry.n_rows, entry.n_sites) == (400, 2)
    assert [(s["site"], s["n_rows"], s["metrics"]["accuracy"]) for s in entry.per_site] == [
        ("site-a", 100, pytest.approx(0.9)),
        ("site-b", 300, pytest.approx(0.5)),
    ]
    submission.refresh_from_db()
    assert submission.status == "scored" and submission.results_visible_at is not None
    row = visitor.get(f"/api/v1/tasks/{task.id}/leaderboard").json()["results"][0]
    assert row["metrics"]["accuracy"] == pytest.approx(0.6)


def test_a_metric_undefined_at_one_site_is_defined_on_the_pool(
    owner, vendor, site, django_capture_on_commit_callbacks
):
    """ROC AUC needs both classes: a site whose rows are all one class alone has none, the pool has."""
    task = make_task(owner, release_delay_seconds=0)
    other = make_site(owner, "site-b")
    register_shard(site, task, rows=100)
    register_shard(other, task, rows=100)
    submission = submit(vendor, task)
    body = release_body(task, n_rows=100)
    one_class = dict(body["statistics"])
    bins = len(one_class["score_histogram"][0])
    one_class["score_histogram"] = [[0.0] * (bins - 2) + [10.0, 90.0], [0.0] * bins]  # no positives
    report(site, submission, 100, django_capture_on_commit_callbacks, statistics=one_class)
    report(other, submission, 100, django_capture_on_commit_callbacks)
    assert "roc_auc" not in job_of(submission, site).result.metrics
    entry = LeaderboardEntry.objects.get(submission=submission)
    assert 0.0 <= entry.metrics["roc_auc"] <= 1.0
    submission.refresh_from_db()
    assert submission.status == "scored"


def test_duplicated_result_does_not_double_count(vendor, two_sites, django_capture_on_commit_callbacks):
    task, site_a, site_b = two_sites
    submission = submit(vendor, task)
    job_a = report(site_a, submission, 100, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        repeat = post_result(site_a, job_a.id, n_rows=100)
    assert repeat.json()["created"] is False
    job_b = report(site_b, submission, 300, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        post_result(site_b, job_b.id, n_rows=300)
    leaderboard_aggregate(submission_id=submission.id)
    entry = LeaderboardEntry.objects.get()
    assert entry.n_rows == 400 and entry.n_sites == 2
    assert entry.metrics["accuracy"] == pytest.approx(0.8)


def test_a_site_failing_before_release_fails_the_submission_without_a_refund(
    vendor, two_sites, django_capture_on_commit_callbacks
):
    """site-a released: the budget stays spent; the vendor sees only 'failed'."""
    task, site_a, site_b = two_sites
    submission = submit(vendor, task)
    report(site_a, submission, 100, django_capture_on_commit_callbacks)
    job_b = claim(site_b)
    with django_capture_on_commit_callbacks(execute=True):
        site_b.client.post(
            f"/api/v1/agent/jobs/{job_b['id']}/failure", {"agent_id": "agent-1", "reason": "invalid_artifact"}
        )
    submission.refresh_from_db()
    assert submission.status == "failed" and submission.status_reason == "invalid_artifact"
    assert not LeaderboardEntry.objects.exists()
    assert PrivacyCharge.objects.get(submission=submission).refunded is False


def test_nothing_released_refunds_the_privacy_budget(vendor, two_sites, django_capture_on_commit_callbacks):
    task, site_a, site_b = two_sites
    submission = submit(vendor, task)
    budget = PrivacyBudget.objects.get(task=task, vendor=vendor.organization, split="public")
    assert budget.rho_spent > 0
    for handle in (site_a, site_b):
        job = claim(handle)
        with django_capture_on_commit_callbacks(execute=True):
            handle.client.post(
                f"/api/v1/agent/jobs/{job['id']}/failure",
                {"agent_id": "agent-1", "reason": "artifact_mismatch"},
            )
    submission.refresh_from_db()
    assert submission.status == "failed"
    assert PrivacyCharge.objects.get(submission=submission).refunded is True
    assert PrivacyBudget.objects.get(id=budget.id).rho_spent == 0
    assert PrivacyBudget.objects.get(task=task, vendor=None, split="public").rho_spent == 0


def test_ladder_on_the_hub_counts_only_improvements_by_the_threshold(
    owner, vendor, site, django_capture_on_commit_callbacks
):
    task = make_task(owner, leaderboard_mode="ladder", ladder_threshold=0.05, quota_per_day=10,
                     metrics=[{"name": "accuracy", "decimals": 3}], primary_metric="accuracy")  # fmt: skip
    register_shard(site, task)
    flags = []
    for name, correct in (("a", 0.70), ("b", 0.73), ("c", 0.76), ("d", 0.60)):
        submission = submit(vendor, task, name=name)
        job = claim(site)
        assert job["task"]["leaderboard_mode"] == "ladder"
        with django_capture_on_commit_callbacks(execute=True):
            assert post_result(site, job["id"], correct=correct).status_code == 200
        flags.append(LeaderboardEntry.objects.get(submission=submission).ladder_improved)
    # a is the first; b is within 0.05 of a; c beats a (the best improving entry) by 0.06.
    assert flags == [True, False, True, False]


def test_ladder_improves_in_the_metrics_direction():
    assert ladder_improves(metric="log_loss", value=0.40, best=0.5, threshold=0.05)
    assert not ladder_improves(metric="log_loss", value=0.46, best=0.5, threshold=0.05)
    assert ladder_improves(metric="accuracy", value=0.5, best=None, threshold=0.05)
    assert not ladder_improves(metric="accuracy", value=None, best=None, threshold=0.05)


def test_results_become_visible_at_a_multiple_of_the_release_delay():
    from django.utils import timezone

    created = timezone.now()
    for elapsed, padded in ((0, 60), (1, 60), (59.5, 60), (60, 60), (61, 120), (250, 300)):
        at = results_visible_at(
            created_at=created, now=created + timedelta(seconds=elapsed), delay_seconds=60
        )
        assert at == created + timedelta(seconds=padded)
    now = created + timedelta(seconds=5)
    assert results_visible_at(created_at=created, now=now, delay_seconds=0) == now


def test_scored_submission_is_visible_only_at_its_padded_time(
    owner, vendor, site, django_capture_on_commit_callbacks
):
    task = make_task(owner, release_delay_seconds=600)
    register_shard(site, task)
    submission = submit(vendor, task)
    report(site, submission, 100, django_capture_on_commit_callbacks)
    submission.refresh_from_db()
    assert submission.results_visible_at == submission.created_at + timedelta(seconds=600)


def test_leaderboard_query_count_does_not_grow_with_entries(
    owner, site, visitor, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    from tests.conftest import _persona

    task = make_task(owner, release_delay_seconds=0)
    register_shard(site, task)
    for i in range(4):
        persona = _persona(f"vendor{i}", f"Vendor {i}", "vendor")
        report(site, submit(persona, task), 100, django_capture_on_commit_callbacks, correct=0.5 + i / 10)
    with django_assert_max_num_queries(3):
        response = visitor.get(f"/api/v1/tasks/{task.id}/leaderboard")
    assert [r["rank"] for r in response.json()["results"]] == [1, 2, 3, 4]


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


def test_a_lost_agent_is_not_refunded(owner, vendor, site, settings, django_capture_on_commit_callbacks):
    """The model may have brought the agent down after seeing data: the release stays paid for."""
    from django.utils import timezone

    from marketplace.jobs.models import Job
    from marketplace.jobs.services import jobs_requeue_expired

    settings.VAULTBENCH_MAX_JOB_ATTEMPTS = 1
    task = make_task(owner)
    register_shard(site, task)
    submission = submit(vendor, task)
    job = claim(site)
    Job.objects.filter(id=job["id"]).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs_requeue_expired() == 1
    submission.refresh_from_db()
    assert (submission.status, submission.status_reason) == ("failed", "agent_lost")
    assert PrivacyCharge.objects.get(submission=submission).refunded is False
