"""What a vendor observes through the REST API while its model runs: one constant body until the
release time, then the outcome; no reason, no jobs, per-site values only where the task shows
them (docs/disclosure.md, "timing and status", "failure reason", "per-site fields")."""

from datetime import timedelta

import pytest
from django.utils import timezone

from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.submissions.models import Submission
from marketplace.submissions.visibility import release_time
from tests.conftest import make_site, make_task, register_shard
from tests.hub.helpers import claim, post_result, submit

DELAY = 600


@pytest.fixture
def two_sites(owner):
    north, south = make_site(owner, "north"), make_site(owner, "south")
    task = make_task(owner, release_delay_seconds=DELAY, quota_per_day=10)
    register_shard(north, task)
    register_shard(south, task)
    return task, north, south


def _later(monkeypatch, submission, seconds: float):
    """Moves the hub's clock to `seconds` after the upload (the views read timezone.now)."""
    at = submission.created_at + timedelta(seconds=seconds)
    monkeypatch.setattr("django.utils.timezone.now", lambda: at)


def _views(persona, submission) -> tuple[dict, dict, list]:
    detail = persona.client.get(f"/api/v1/submissions/{submission.id}")
    listing = persona.client.get("/api/v1/submissions", {"task": submission.task_id})
    board = persona.client.get(f"/api/v1/tasks/{submission.task_id}/leaderboard")
    assert detail.status_code == listing.status_code == board.status_code == 200
    return detail.json(), listing.json()["results"], board.json()["results"]


def _fail(site, job_id: int, reason: str):
    response = site.client.post(f"/api/v1/agent/jobs/{job_id}/failure", {"agent_id": "agent-1", "reason": reason})
    assert response.status_code == 200, response.content


def _aggregate(submission):
    from marketplace.leaderboard.services import leaderboard_aggregate

    leaderboard_aggregate(submission_id=submission.id)  # the Celery task's body (on_commit never fires here)
    return Submission.objects.get(id=submission.id)


@pytest.mark.parametrize("outcome", ["scored", "failed"])
def test_a_vendor_polling_sees_identical_bodies_until_the_release_time(two_sites, vendor, owner, outcome):
    task, north, south = two_sites
    submission = submit(vendor, task)
    first = _views(vendor, submission)
    detail = first[0]
    assert detail["status"] == "pending" and detail["status_reason"] == ""
    assert detail["metrics"] is None and detail["per_site"] is None and detail["jobs"] is None
    assert detail["results_visible_at"] is None and "updated_at" not in detail
    assert first[2] == []
    # Every step of the sites' work, and the hub scoring it, looks the same to the vendor.
    north_job, south_job = claim(north)["id"], claim(south)["id"]
    assert _views(vendor, submission) == first
    assert post_result(north, north_job).status_code == 200
    assert _views(vendor, submission) == first
    if outcome == "scored":
        assert post_result(south, south_job).status_code == 200
    else:
        _fail(south, south_job, "artifact_mismatch")
    submission = _aggregate(submission)
    assert submission.status == outcome
    assert submission.results_visible_at == submission.created_at + timedelta(seconds=DELAY)
    assert _views(vendor, submission) == first
    # The owner sees the truth all along.
    mine = owner.client.get(f"/api/v1/submissions/{submission.id}").json()
    assert mine["status"] == outcome and len(mine["jobs"]) == 2 and mine["results_visible_at"] is not None


def test_after_the_release_time_the_vendor_sees_the_outcome_without_a_reason(two_sites, vendor, owner, monkeypatch):
    task, north, south = two_sites
    scored, failed = submit(vendor, task, name="good"), submit(vendor, task, name="bad")
    for site in (north, south):
        post_result(site, claim(site)["id"])
    _fail(north, claim(north)["id"], "invalid_artifact")
    post_result(south, claim(south)["id"])
    scored, failed = _aggregate(scored), _aggregate(failed)
    _later(monkeypatch, scored, DELAY - 1)
    assert _views(vendor, scored)[0]["status"] == "pending"
    _later(monkeypatch, failed, DELAY + 1)
    detail, listing, board = _views(vendor, scored)
    assert detail["status"] == "scored" and detail["jobs"] is None and detail["status_reason"] == ""
    entry = LeaderboardEntry.objects.get(submission=scored)
    assert detail["metrics"] == {"roc_auc": round(entry.metrics["roc_auc"], 4),
                                 "accuracy": round(entry.metrics["accuracy"], 3)}  # fmt: skip
    assert [row["submission_id"] for row in board] == [scored.id]
    failed_view = vendor.client.get(f"/api/v1/submissions/{failed.id}").json()
    assert failed_view["status"] == "failed" and failed_view["status_reason"] == ""
    assert failed_view["metrics"] is None and failed_view["jobs"] is None
    assert "invalid_artifact" not in str(listing)
    assert owner.client.get(f"/api/v1/submissions/{failed.id}").json()["status_reason"] == "invalid_artifact"


@pytest.mark.parametrize("show_per_site", [False, True])
def test_per_site_fields_reach_a_vendor_only_where_the_task_shows_them(owner, vendor, show_per_site):
    north, south = make_site(owner, "north"), make_site(owner, "south")
    task = make_task(owner, show_per_site=show_per_site, release_delay_seconds=0)
    register_shard(north, task)
    register_shard(south, task)
    submission = submit(vendor, task)
    for site in (north, south):
        post_result(site, claim(site)["id"])
    _aggregate(submission)
    detail, listing, board = _views(vendor, submission)
    assert detail["status"] == "scored"
    if show_per_site:
        assert [s["site"] for s in detail["per_site"]] == ["north", "south"]
        assert [s["site"] for s in board[0]["per_site"]] == ["north", "south"]
    else:
        assert detail["per_site"] is None and listing[0]["per_site"] is None and board[0]["per_site"] is None
        for body in (detail, listing, board):
            assert "north" not in str(body) and "south" not in str(body)
    # The owner sees them either way; a vendor sees no job.
    assert owner.client.get(f"/api/v1/submissions/{submission.id}").json()["per_site"] is not None
    assert owner.client.get(f"/api/v1/tasks/{task.id}/leaderboard").json()["results"][0]["per_site"] is not None
    assert vendor.client.get("/api/v1/jobs").json()["results"] == []


def test_a_vendor_cannot_learn_the_outcome_early_by_nominating(two_sites, vendor, monkeypatch):
    task, north, south = two_sites
    submission = submit(vendor, task)
    for site in (north, south):
        post_result(site, claim(site)["id"])
    submission = _aggregate(submission)
    assert submission.status == "scored"
    response = vendor.client.post(f"/api/v1/submissions/{submission.id}/nominate")
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_scored"
    assert not Submission.objects.get(id=submission.id).is_final
    _later(monkeypatch, submission, DELAY)
    response = vendor.client.post(f"/api/v1/submissions/{submission.id}/nominate")
    assert response.status_code == 200 and response.json()["is_final"] and response.json()["status"] == "scored"


def test_a_ladder_entry_that_did_not_improve_releases_no_new_score(owner, vendor):
    site = make_site(owner, "north")
    task = make_task(owner, leaderboard_mode="ladder", release_delay_seconds=0, quota_per_day=10)
    register_shard(site, task)
    first, second = submit(vendor, task, name="first"), submit(vendor, task, name="second")
    post_result(site, claim(site)["id"])
    post_result(site, claim(site)["id"])  # the same score: no improvement by the threshold
    _aggregate(first), _aggregate(second)
    assert LeaderboardEntry.objects.get(submission=second).ladder_improved is False
    view = vendor.client.get(f"/api/v1/submissions/{second.id}").json()
    assert view["status"] == "scored" and view["ladder_improved"] is False and view["metrics"] is None
    board = vendor.client.get(f"/api/v1/tasks/{task.id}/leaderboard").json()["results"]
    assert [row["submission_id"] for row in board] == [first.id]


def test_the_quota_api_shows_the_privacy_budget_before_an_upload(owner, vendor, site):
    task = make_task(owner, dp_epsilon_per_release=2.0, dp_vendor_epsilon=4.0, dp_task_epsilon=8.0)
    register_shard(site, task)
    privacy = vendor.client.get(f"/api/v1/tasks/{task.id}/quota").json()["privacy"]
    assert privacy["epsilon_per_release"] == 2.0 and privacy["delta"] == 1e-6
    assert privacy["vendor_epsilon"] == 4.0 and privacy["vendor_epsilon_spent"] == 0.0
    # zCDP composes more tightly than adding epsilons: more than 4 / 2 releases fit.
    left = privacy["submissions_left"]
    assert left >= 2 and "Gaussian" in privacy["mechanism"] and "Opacus" in privacy["accountant"]
    submit(vendor, task)
    privacy = vendor.client.get(f"/api/v1/tasks/{task.id}/quota").json()["privacy"]
    assert privacy["vendor_epsilon_spent"] == pytest.approx(2.0, rel=1e-6)
    assert privacy["submissions_left"] == left - 1


def test_release_time_is_the_next_point_of_the_grid():
    created = timezone.now()
    assert release_time(created_at=created, delay_seconds=60, now=created) == created + timedelta(seconds=60)
    assert release_time(created_at=created, delay_seconds=60, now=created + timedelta(seconds=61)) == (
        created + timedelta(seconds=120)
    )
    now = created + timedelta(seconds=5)
    assert release_time(created_at=created, delay_seconds=0, now=now) == now


def test_submission_list_query_count_does_not_grow_with_submissions(owner, vendor, site, django_assert_max_num_queries):
    task = make_task(owner, release_delay_seconds=0, quota_per_day=20)
    register_shard(site, task)

    def scored(n):
        for i in range(n):
            submission = submit(vendor, task, name=f"m{i}")
            post_result(site, claim(site)["id"])
            _aggregate(submission)

    scored(2)
    with django_assert_max_num_queries(5):
        assert len(vendor.client.get("/api/v1/submissions").json()["results"]) == 2
    scored(4)
    for persona in (vendor, owner):
        with django_assert_max_num_queries(5):
            results = persona.client.get("/api/v1/submissions").json()["results"]
        assert len(results) == 6 and all(r["status"] == "scored" and r["metrics"] for r in results)


def _side_views(persona, submission) -> dict:
    """The other endpoints a vendor can poll about its work: filtered lists, leakage, quota."""
    params = {"task": submission.task_id}
    views = {
        status: [s["id"] for s in persona.client.get("/api/v1/submissions", {**params, "status": status}).json()["results"]]
        for status in ("pending", "scored", "failed", "evaluating")
    }  # fmt: skip
    views["leakage"] = persona.client.get(f"/api/v1/tasks/{submission.task_id}/leakage").json()
    views["quota"] = persona.client.get(f"/api/v1/tasks/{submission.task_id}/quota").json()
    return views


def test_filters_leakage_and_quota_show_nothing_before_the_release_time(two_sites, vendor, owner, monkeypatch):
    """Found by the attack replay: `?status=scored` and the leakage view moved when the sites
    finished, seconds before the release time, and so told a model's run time."""
    task, north, south = two_sites
    submission = submit(vendor, task)
    before = _side_views(vendor, submission)
    assert before["pending"] == [submission.id] and before["scored"] == before["evaluating"] == []
    for site in (north, south):
        post_result(site, claim(site)["id"])
    submission = _aggregate(submission)
    assert submission.status == "scored"
    assert _side_views(vendor, submission) == before  # the sites are done: nothing moved
    # The owner filters on the truth at once.
    owner_ids = [s["id"] for s in owner.client.get("/api/v1/submissions", {"status": "scored"}).json()["results"]]
    assert owner_ids == [submission.id]
    _later(monkeypatch, submission, DELAY)
    after = _side_views(vendor, submission)
    assert after["scored"] == [submission.id] and after["pending"] == []


def test_a_vendor_in_two_organizations_names_one_to_read_its_budget(two_sites, vendor):
    from marketplace.accounts.services import organization_create

    task, _, _ = two_sites
    second = organization_create(name="Second vendor org", kind="vendor", creator=vendor.user)
    response = vendor.client.get(f"/api/v1/tasks/{task.id}/quota")
    assert response.status_code == 400 and response.json()["error"]["code"] == "organization_required"
    for org_id in (vendor.organization.id, second.id):
        response = vendor.client.get(f"/api/v1/tasks/{task.id}/quota", {"organization": org_id})
        assert response.status_code == 200 and response.json()["privacy"]["submissions_left"] > 0
