"""The hub's side of the disclosure design (docs/disclosure.md): privacy budgets reserved with the
quota, quotas, release approval, reveals at close for the finals only, and the egress mirror.
The site's side is in tests/evaluator."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from evaluator.privacy.zcdp import epsilon_for_rho, rho_for_epsilon
from marketplace.audit.models import AuditEvent
from marketplace.budgets.costs import release_cost
from marketplace.budgets.models import PrivacyBudget, PrivacyCharge
from marketplace.budgets.selectors import budget_summary
from marketplace.catalog.services import task_close, task_close_plan
from marketplace.egress.models import EgressRecord
from marketplace.jobs.models import Job, JobKind, JobStatus, Result
from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.submissions.models import QuotaCounter, Submission
from marketplace.submissions.reconcile import submissions_reconcile
from tests.conftest import make_site, make_task, register_shard, upload
from tests.hub.helpers import claim, error_code, post_result, submit, with_receipt

# Budgets of exactly three releases: epsilon of 3 rhos at the task's delta.
DELTA = 1e-6
THREE_RELEASES = epsilon_for_rho(3 * rho_for_epsilon(1.0, DELTA), DELTA) * (1 + 1e-9)


def _racing_uploads(n: int, do_upload) -> list[int]:
    """`n` threads released at once, each calling do_upload(i); the status codes they got."""
    statuses, barrier = [], threading.Barrier(n)

    def attempt(i):
        barrier.wait()
        try:
            statuses.append(do_upload(i).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def _score(site, submission, *, correct=0.8, agent="agent-1", n_rows=100):
    job = claim(site, agent)
    assert job["submission"]["id"] == submission.id
    response = post_result(site, job["id"], agent_id=agent, correct=correct, n_rows=n_rows)
    assert response.status_code == 200, response.content
    return job["id"]


def _fail(site, *, reason="invalid_artifact"):
    job = claim(site)
    return site.client.post(
        f"/api/v1/agent/jobs/{job['id']}/failure", {"agent_id": "agent-1", "reason": reason}
    )


# --- privacy budgets ---------------------------------------------------------------------------


def test_upload_reserves_one_release_on_the_vendors_and_the_tasks_budget(owner, vendor, site, open_task):
    submission = submit(vendor, open_task)
    rho, epsilon, delta = release_cost(open_task)
    assert rho == pytest.approx(rho_for_epsilon(1.0, 1e-6))
    charge = PrivacyCharge.objects.get(submission=submission)
    assert (charge.split, charge.rho, charge.epsilon, charge.delta, charge.refunded) == (
        "public",
        rho,
        1.0,
        1e-6,
        False,
    )
    assert (
        PrivacyBudget.objects.get(task=open_task, vendor=vendor.organization, split="public").rho_spent == rho
    )
    assert PrivacyBudget.objects.get(task=open_task, vendor=None, split="public").rho_spent == rho
    summary = budget_summary(task=open_task, vendor_id=vendor.organization.id)
    assert summary["vendor_epsilon_spent"] == pytest.approx(1.0)
    assert (
        summary["epsilon_per_release"] == 1.0
        and summary["delta"] == 1e-6
        and summary["vendor_epsilon"] == 10.0
    )
    assert summary["submissions_left"] >= 1
    assert summary["vendor_epsilon_remaining"] == pytest.approx(
        epsilon_for_rho(rho_for_epsilon(10.0, 1e-6) - rho, 1e-6)
    )


def test_an_upload_past_the_vendors_budget_is_refused_and_consumes_nothing(owner, vendor, site):
    task = make_task(owner, quota_per_day=10, dp_vendor_epsilon=THREE_RELEASES)
    register_shard(site, task)
    for name in "abc":
        submit(vendor, task, name=name)
    assert budget_summary(task=task, vendor_id=vendor.organization.id)["submissions_left"] == 0
    refused = upload(vendor, task, name="d")
    assert refused.status_code == 409 and error_code(refused) == "budget_exhausted"
    assert "privacy budget" in refused.json()["error"]["message"]
    assert Submission.objects.filter(task=task).count() == 3
    assert QuotaCounter.objects.get(task=task, day__isnull=False).used == 3  # the quota was not taken
    assert PrivacyBudget.objects.get(task=task, vendor=vendor.organization).rho_spent == pytest.approx(
        3 * release_cost(task)[0]
    )


def test_the_tasks_total_budget_cannot_be_reset_by_another_organization(owner, vendor, second_vendor, site):
    task = make_task(
        owner, quota_per_day=10, dp_vendor_epsilon=THREE_RELEASES, dp_task_epsilon=THREE_RELEASES
    )
    register_shard(site, task)
    submit(vendor, task, name="a")
    submit(vendor, task, name="b")
    submit(second_vendor, task, name="c")
    refused = upload(second_vendor, task, name="d")
    assert refused.status_code == 409 and error_code(refused) == "budget_exhausted"
    assert refused.json()["error"]["details"]["scope"] == "task"
    assert not PrivacyBudget.objects.filter(
        task=task, vendor=second_vendor.organization, rho_spent__gt=2 * release_cost(task)[0]
    ).exists()


def test_a_refunded_release_fits_again(owner, vendor, site, django_capture_on_commit_callbacks):
    task = make_task(owner, quota_per_day=10, dp_vendor_epsilon=THREE_RELEASES)
    register_shard(site, task)
    for name in "abc":
        submit(vendor, task, name=name)
    with django_capture_on_commit_callbacks(execute=True):
        assert _fail(site).status_code == 200  # before the model saw data: nothing released
    assert upload(vendor, task, name="d").status_code == 201
    assert AuditEvent.objects.filter(action="budget.refunded").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_never_overshoot_the_privacy_budget(owner, vendor, second_vendor, site):
    task = make_task(
        owner, quota_per_day=50, dp_vendor_epsilon=THREE_RELEASES, dp_task_epsilon=THREE_RELEASES
    )
    register_shard(site, task)
    statuses = _racing_uploads(8, lambda i: upload(vendor if i % 2 else second_vendor, task, name=f"m{i}"))
    assert sorted(statuses) == [201] * 3 + [409] * 5
    rho = release_cost(task)[0]
    total = PrivacyBudget.objects.get(task=task, vendor=None, split="public").rho_spent
    assert total == pytest.approx(3 * rho) and total <= rho_for_epsilon(THREE_RELEASES, DELTA)
    assert (
        Submission.objects.filter(task=task).count() == PrivacyCharge.objects.filter(task=task).count() == 3
    )
    assert sum(c.used for c in QuotaCounter.objects.filter(task=task, day__isnull=False)) == 3


# --- quotas ------------------------------------------------------------------------------------


def test_quota_counts_uploads_and_shows_what_remains(owner, vendor, site):
    task = make_task(owner, quota_per_day=2, quota_total=3)
    register_shard(site, task)
    submit(vendor, task, name="a")
    quota = vendor.client.get(f"/api/v1/tasks/{task.id}/quota").json()
    assert (quota["used_today"], quota["remaining_today"], quota["remaining_total"]) == (1, 1, 2)
    submit(vendor, task, name="b")
    refused = upload(vendor, task, name="c")
    assert refused.status_code == 429 and error_code(refused) == "quota_exceeded"
    assert Submission.objects.filter(task=task).count() == 2
    # The refused upload's budget reservation was rolled back with it.
    assert PrivacyCharge.objects.filter(task=task).count() == 2
    assert PrivacyBudget.objects.get(task=task, vendor=None).rho_spent == pytest.approx(
        2 * release_cost(task)[0]
    )


def test_failed_jobs_give_quota_back_when_the_owner_says_so(
    owner, vendor, site, django_capture_on_commit_callbacks
):
    task = make_task(owner, quota_per_day=1, failed_jobs_consume_quota=False)
    register_shard(site, task)
    submit(vendor, task)
    with django_capture_on_commit_callbacks(execute=True):
        _fail(site)
    assert vendor.client.get(f"/api/v1/tasks/{task.id}/quota").json()["remaining_today"] == 1
    assert upload(vendor, task, name="again").status_code == 201


def test_failed_jobs_keep_their_quota_by_default(owner, vendor, site, django_capture_on_commit_callbacks):
    task = make_task(owner, quota_per_day=1)
    register_shard(site, task)
    submit(vendor, task)
    with django_capture_on_commit_callbacks(execute=True):
        _fail(site)
    assert upload(vendor, task, name="again").status_code == 429


@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_never_exceed_the_daily_quota(owner, vendor, site):
    task = make_task(owner, quota_per_day=3)
    register_shard(site, task)
    statuses = _racing_uploads(8, lambda i: upload(vendor, task, name=f"m{i}"))
    assert sorted(statuses) == [201] * 3 + [429] * 5
    assert Submission.objects.filter(task=task).count() == 3
    assert QuotaCounter.objects.get(task=task, day__isnull=False).used == 3
    assert PrivacyBudget.objects.get(task=task, vendor=None).rho_spent == pytest.approx(
        3 * release_cost(task)[0]
    )


# --- release approval --------------------------------------------------------------------------


def test_held_result_waits_for_the_owners_release(owner, vendor, site, django_capture_on_commit_callbacks):
    task = make_task(owner, requires_release_approval=True)
    register_shard(site, task)
    submission = submit(vendor, task)
    job = claim(site)
    assert job["task"]["requires_release_approval"] is True
    assert (
        site.client.post(f"/api/v1/agent/jobs/{job['id']}/hold", {"agent_id": "agent-1"}).status_code == 200
    )
    assert Job.objects.get(id=job["id"]).status == JobStatus.HELD
    assert site.client.get("/api/v1/agent/pending").json() == {"releases": [], "reveals": []}
    assert vendor.client.post(f"/api/v1/jobs/{job['id']}/release").status_code == 404  # not the owner's
    released = owner.client.post(f"/api/v1/jobs/{job['id']}/release")
    assert released.status_code == 200
    pending = site.client.get("/api/v1/agent/pending").json()
    assert pending["releases"] == [{"job_id": job["id"], "decision": "approved"}]
    # Any agent of the site posts the held result; it has no lease.
    with django_capture_on_commit_callbacks(execute=True):
        assert post_result(site, job["id"], agent_id="agent-2").status_code == 200
    submission.refresh_from_db()
    assert submission.status == "scored"
    assert owner.client.post(f"/api/v1/jobs/{job['id']}/release").status_code == 409


def test_withheld_result_fails_the_job_and_refunds_the_budget(
    owner, vendor, site, django_capture_on_commit_callbacks
):
    task = make_task(owner, requires_release_approval=True)
    register_shard(site, task)
    submission = submit(vendor, task)
    job = claim(site)
    site.client.post(f"/api/v1/agent/jobs/{job['id']}/hold", {"agent_id": "agent-1"})
    assert owner.client.post(f"/api/v1/jobs/{job['id']}/withhold").status_code == 200
    body = with_receipt({"agent_id": "agent-1", "reason": "withheld"})
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            site.client.post(f"/api/v1/agent/jobs/{job['id']}/failure", body, format="json").status_code
            == 200
        )
    submission.refresh_from_db()
    assert (submission.status, submission.status_reason) == ("failed", "withheld")
    record = EgressRecord.objects.get(job_id=job["id"])
    assert (record.kind, record.rho, record.epsilon) == ("failure", None, None)  # a constant release
    assert PrivacyCharge.objects.get(submission=submission).refunded is True


# --- reveal at close ---------------------------------------------------------------------------


def _private(site, job_id, *, correct=0.7, n_rows=50):
    return post_result(site, job_id, private=True, correct=correct, n_rows=n_rows)


@pytest.fixture
def closing(owner, vendor, second_vendor, site, django_capture_on_commit_callbacks):
    """A half-private task with three scored submissions: 'first' (0.9) and 'second' (0.8) of the
    vendor, who nominates 'second', and 'other' (0.85) of the second vendor."""
    task = make_task(owner, public_split_fraction=0.5, final_submissions=1, release_delay_seconds=0,
                     metrics=[{"name": "accuracy", "decimals": 3}], primary_metric="accuracy")  # fmt: skip
    register_shard(site, task)
    subs, jobs = {}, {}
    with django_capture_on_commit_callbacks(execute=True):
        for name, persona, correct in (
            ("first", vendor, 0.9),
            ("second", vendor, 0.8),
            ("other", second_vendor, 0.86),
        ):
            subs[name] = submit(persona, task, name=name)
            jobs[name] = _score(site, subs[name], correct=correct, n_rows=50)
    assert vendor.client.post(f"/api/v1/submissions/{subs['second'].id}/nominate").status_code == 200
    return task, subs, jobs


def test_close_plan_lists_the_finals_only(owner, vendor, closing):
    task, subs, _ = closing
    plan = owner.client.get(f"/api/v1/tasks/{task.id}/close-plan").json()
    assert plan["has_private_split"] is True and plan["epsilon_per_reveal"] == 1.0
    # The vendor's nominated final, and the second vendor's best (it nominated none).
    assert sorted(row["submission"] for row in plan["reveal"]) == ["other", "second"]
    assert plan["not_revealed"] == []
    assert vendor.client.get(f"/api/v1/tasks/{task.id}/close-plan").status_code == 404


def test_private_scores_are_revealed_for_the_approved_finals_only(
    owner, vendor, site, closing, django_capture_on_commit_callbacks
):
    task, subs, jobs = closing
    assert site.client.get("/api/v1/agent/pending").json()["reveals"] == []
    early = _private(site, jobs["first"])
    assert early.status_code == 409 and error_code(early) == "task_not_closed"

    task_close(task=task, actor=owner.user)
    assert sorted(site.client.get("/api/v1/agent/pending").json()["reveals"]) == sorted(
        [jobs["second"], jobs["other"]]
    )
    # A non-final's reveal is refused: the owner's close did not approve it.
    refused = _private(site, jobs["first"])
    assert refused.status_code == 409 and error_code(refused) == "reveal_not_approved"
    assert AuditEvent.objects.filter(action="job.private_result_refused").count() == 2
    private_rho = {c.submission.name: c.rho for c in PrivacyCharge.objects.filter(split="private")}
    assert set(private_rho) == {"second", "other"}

    with django_capture_on_commit_callbacks(execute=True):
        assert _private(site, jobs["second"], correct=0.88).status_code == 200
        assert _private(site, jobs["other"], correct=0.84).status_code == 200
    assert site.client.get("/api/v1/agent/pending").json()["reveals"] == []
    assert LeaderboardEntry.objects.get(submission=subs["second"]).private_metrics[
        "accuracy"
    ] == pytest.approx(0.88)
    assert LeaderboardEntry.objects.get(submission=subs["first"]).private_metrics is None
    record = EgressRecord.objects.get(job_id=jobs["second"], kind="reveal")
    assert (record.rho, record.epsilon, record.delta) == release_cost(task)
    # The same reveal again changes nothing; another body for it is a conflict.
    assert _private(site, jobs["second"], correct=0.88).json()["created"] is False
    other = _private(site, jobs["second"], correct=0.1)
    assert other.status_code == 409 and error_code(other) == "already_reported"
    assert Result.objects.get(job_id=jobs["second"]).private_metrics["accuracy"] == pytest.approx(0.88)


def test_a_private_release_with_the_public_row_count_is_refused(owner, site, closing):
    task, _, jobs = closing
    task_close(task=task, actor=owner.user)
    response = _private(site, jobs["second"], n_rows=51)
    assert response.status_code == 400 and error_code(response) == "wrong_n_rows"
    assert Result.objects.get(job_id=jobs["second"]).private_statistics is None


def test_finals_that_do_not_fit_the_private_budget_are_not_revealed(
    owner, vendor, second_vendor, site, closing
):
    task, subs, jobs = closing
    task.dp_task_epsilon = task.dp_vendor_epsilon = 1.0 * (1 + 1e-9)  # room for one reveal
    task.save(update_fields=["dp_task_epsilon", "dp_vendor_epsilon"])
    plan = task_close_plan(task=task)
    assert [row["submission"] for row in plan["reveal"]] == ["other"]  # the better final goes first
    assert [(row["submission"], row["reason"]) for row in plan["not_revealed"]] == [
        ("second", "budget_exhausted")
    ]
    task_close(task=task, actor=owner.user)
    assert site.client.get("/api/v1/agent/pending").json()["reveals"] == [jobs["other"]]
    assert AuditEvent.objects.get(action="task.closed").data == {
        "reveals": [subs["other"].id],
        "not_revealed": [subs["second"].id],
    }


# --- the egress mirror -------------------------------------------------------------------------


def test_every_release_is_mirrored_once_with_its_hash_and_cost(
    owner, other_owner, vendor, second_vendor, site, open_task
):
    submit(vendor, open_task)
    job = claim(site)
    for _ in range(2):
        assert post_result(site, job["id"]).status_code == 200
    record = EgressRecord.objects.get()
    rho, epsilon, delta = release_cost(open_task)
    assert (record.rho, record.epsilon, record.delta) == (rho, epsilon, delta)
    listed = owner.client.get("/api/v1/egress").json()["results"]
    assert [(r["sha256"], r["rho"], r["epsilon"], r["delta"]) for r in listed] == [
        (record.sha256, rho, epsilon, delta)
    ]
    assert other_owner.client.get("/api/v1/egress").json()["results"] == []
    assert vendor.client.get("/api/v1/egress").json()["results"] == []
    csv = owner.client.get("/api/v1/egress.csv").content.decode()
    assert csv.splitlines()[0].endswith("sha256,rho,epsilon,delta") and record.sha256 in csv
    leakage = owner.client.get(f"/api/v1/tasks/{open_task.id}/leakage").json()
    assert leakage == [{"vendor_id": vendor.organization.id, "vendor": vendor.organization.name, "releases": 1,
                        "bytes": record.bytes, "rho": rho, "epsilon": pytest.approx(1.0), "private_rho": 0.0,
                        "private_epsilon": 0.0, "delta": delta, "vendor_epsilon": 10.0}]  # fmt: skip
    assert second_vendor.client.get(f"/api/v1/tasks/{open_task.id}/leakage").json() == []


def test_sites_of_another_owner_cannot_reveal_or_hold(owner, other_owner, vendor, site, open_task):
    submit(vendor, open_task)
    job = claim(site)
    foreign = make_site(other_owner, "elsewhere")
    assert (
        foreign.client.post(f"/api/v1/agent/jobs/{job['id']}/hold", {"agent_id": "agent-1"}).status_code
        == 404
    )
    response = foreign.client.post(
        f"/api/v1/agent/jobs/{job['id']}/private-result", {"agent_id": "a"}, format="json"
    )
    assert response.status_code in (400, 404)
    assert not Result.objects.exists()


def test_closing_with_a_confirmed_plan_that_has_changed_closes_nothing(owner, vendor, closing):
    task, subs, _ = closing
    shown = [row["submission_id"] for row in owner.client.get(f"/api/v1/tasks/{task.id}/close-plan").json()["reveal"]]
    # The vendor changes its final after the owner looked.
    assert vendor.client.post(f"/api/v1/submissions/{subs['second'].id}/unnominate").status_code == 200
    stale = owner.client.post(f"/api/v1/tasks/{task.id}/close", {"reveal": shown}, format="json")
    assert stale.status_code == 409 and error_code(stale) == "plan_changed"
    task.refresh_from_db()
    assert task.status == "open" and not PrivacyCharge.objects.filter(split="private").exists()
    current = stale.json()["error"]["details"]["reveal"]
    closed = owner.client.post(f"/api/v1/tasks/{task.id}/close", {"reveal": current}, format="json")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert sorted(e.submission_id for e in LeaderboardEntry.objects.filter(reveal_approved=True)) == sorted(current)


def test_reveals_list_only_evaluation_jobs_still_to_reveal(
    owner, site, closing, django_capture_on_commit_callbacks
):
    """Fine-tuning train jobs never reveal anything, and a revealed job leaves the list: otherwise
    the agent warns about them at every poll for ever."""
    task, subs, jobs = closing
    train = Job.objects.create(
        kind=JobKind.TRAIN, submission=subs["second"], site=site.site, status=JobStatus.SUCCEEDED
    )
    task_close(task=task, actor=owner.user)
    reveals = site.client.get("/api/v1/agent/pending").json()["reveals"]
    assert sorted(reveals) == sorted([jobs["second"], jobs["other"]]) and train.id not in reveals
    with django_capture_on_commit_callbacks(execute=True):
        assert _private(site, jobs["second"]).status_code == 200
    assert site.client.get("/api/v1/agent/pending").json()["reveals"] == [jobs["other"]]


def test_reconciler_pools_a_reveal_whose_message_was_lost(owner, site, closing):
    task, subs, jobs = closing
    task_close(task=task, actor=owner.user)
    # Not run: the reveal's aggregation is enqueued on commit, which this test never reaches.
    assert _private(site, jobs["second"], correct=0.88).status_code == 200
    LeaderboardEntry.objects.update(updated_at=timezone.now() - timedelta(minutes=3))
    assert submissions_reconcile() == {"checked": 0, "aggregated": 0, "revealed": 1}
    entry = LeaderboardEntry.objects.get(submission=subs["second"])
    assert entry.private_metrics["accuracy"] == pytest.approx(0.88)
    # "other" waits for its site; nothing more to do on a second run.
    assert LeaderboardEntry.objects.get(submission=subs["other"]).private_metrics is None
    assert submissions_reconcile() == {"checked": 0, "aggregated": 0, "revealed": 0}
    assert AuditEvent.objects.filter(action="submission.reconciled").count() == 1
