"""The vendor CLI shows what the API shows a vendor: the privacy budget before uploading, "pending"
until the release time, then the scores, or "failed" (exit 1) with no reason."""

import pytest

from marketplace.leaderboard.services import leaderboard_aggregate
from marketplace.submissions.models import Submission
from tests.conftest import make_site, make_task, register_shard, sklearn_like_artifact
from tests.hub.helpers import claim, post_result, submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_quota_prints_the_privacy_budget(cli, owner, vendor, site):
    task = make_task(owner, dp_epsilon_per_release=0.5)
    register_shard(site, task)
    code, out, err = cli("quota", "--task", str(task.id))
    assert code == 0, err
    assert "submissions left today: 5 of 5" in out
    assert "epsilon 0.5 per submission at delta 1e-06" in out and "spent 0.00 of 10" in out
    assert "uploads that fit the privacy budget:" in out and "Opacus" in out


def test_status_is_pending_until_the_release_time_then_prints_the_scores(cli, owner, vendor):
    north, south = make_site(owner, "north"), make_site(owner, "south")
    task = make_task(owner, release_delay_seconds=3600, show_per_site=False)
    register_shard(north, task)
    register_shard(south, task)
    submission = submit(vendor, task)
    for site in (north, south):
        post_result(site, claim(site)["id"])
    leaderboard_aggregate(submission_id=submission.id)
    code, out, _ = cli("status", str(submission.id))
    assert code == 0 and "pending (results at" in out and "roc_auc" not in out and "north" not in out
    Submission.objects.filter(id=submission.id).update(results_visible_at=submission.created_at)
    code, out, _ = cli("status", str(submission.id))
    assert code == 0 and ": scored" in out and "roc_auc = " in out and "accuracy = " in out
    assert "north" not in out  # the task hides per-site values


def test_status_of_a_failed_submission_exits_non_zero_without_a_reason(cli, owner, vendor, site):
    task = make_task(owner, release_delay_seconds=0)
    register_shard(site, task)
    submission = submit(vendor, task)
    job_id = claim(site)["id"]
    site.client.post(f"/api/v1/agent/jobs/{job_id}/failure", {"agent_id": "agent-1", "reason": "invalid_artifact"})
    leaderboard_aggregate(submission_id=submission.id)
    code, out, _ = cli("status", str(submission.id))
    assert code == 1 and ": failed" in out and "invalid_artifact" not in out


def test_submit_wait_gives_up_with_its_own_exit_code_while_pending(cli, owner, site, tmp_path):
    task = make_task(owner)
    register_shard(site, task)
    artifact = tmp_path / "model.joblib"
    artifact.write_bytes(sklearn_like_artifact().getvalue())
    code, out, err = cli(
        "submit", str(artifact), "--task", str(task.id), "--format", "sklearn", "--name", "w", "--wait", "--timeout", "0"
    )
    assert code == 4 and ": pending" in out and "still pending" in err
