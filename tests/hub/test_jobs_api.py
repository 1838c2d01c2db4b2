"""Jobs as people see them, and the owner's approval gate (requires_job_approval)."""

import pytest

from marketplace.audit.models import AuditEvent
from marketplace.jobs.models import Job, JobStatus
from tests.conftest import make_site, make_task, register_shard
from tests.hub.helpers import claim, error_code, job_of, post_result, submit


@pytest.fixture
def held_task(owner, site):
    task = make_task(owner, requires_job_approval=True)
    register_shard(site, task)
    return task


def test_vendors_see_no_jobs_at_all(vendor, second_vendor, site, open_task):
    """Per-site progress and timing are observables: a vendor sees its submission, never its jobs."""
    mine = submit(vendor, open_task)
    submit(second_vendor, open_task)
    assert vendor.client.get("/api/v1/jobs").json()["results"] == []
    assert vendor.client.get(f"/api/v1/jobs/{job_of(mine, site).id}").status_code == 404


def test_vendor_never_sees_another_vendors_job(vendor, second_vendor, site, open_task):
    job = job_of(submit(vendor, open_task), site)
    foreign = second_vendor.client.get(f"/api/v1/jobs/{job.id}")
    missing = second_vendor.client.get("/api/v1/jobs/999999")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


def test_owner_sees_jobs_and_results_of_its_tasks(owner, other_owner, vendor, site, open_task):
    submission = submit(vendor, open_task)
    job = claim(site)
    post_result(site, job["id"])
    body = owner.client.get(f"/api/v1/jobs/{job['id']}").json()
    assert body["status"] == "succeeded" and body["submission_id"] == submission.id
    assert body["result"]["metrics"]["accuracy"] == pytest.approx(0.8)
    assert body["result"]["n_rows"] == 100
    assert other_owner.client.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    assert other_owner.client.get("/api/v1/jobs").json()["results"] == []


def test_visitor_and_site_cannot_read_jobs(visitor, site, vendor, open_task):
    job = job_of(submit(vendor, open_task), site)
    assert visitor.get("/api/v1/jobs").status_code in (401, 403)
    assert visitor.get(f"/api/v1/jobs/{job.id}").status_code in (401, 403)
    assert site.client.get(f"/api/v1/jobs/{job.id}").status_code == 401


def test_job_list_query_count_does_not_grow_with_jobs(
    owner, vendor, open_task, django_assert_max_num_queries
):
    open_task.quota_per_day = 20
    open_task.save(update_fields=["quota_per_day"])
    for i in range(2):
        register_shard(make_site(owner, f"extra-{i}"), open_task)
    for i in range(5):
        submit(vendor, open_task, name=f"m{i}")
    site = open_task.shards.first().site
    with django_assert_max_num_queries(4):
        response = owner.client.get("/api/v1/jobs")
    assert response.json()["count"] == 15
    with django_assert_max_num_queries(4):
        assert owner.client.get(f"/api/v1/jobs?task={open_task.id}&site={site.id}").json()["count"] == 5


def test_bad_job_filter_is_a_400(owner):
    response = owner.client.get("/api/v1/jobs?status=exploded")
    assert response.status_code == 400
    assert error_code(response) == "invalid"


def test_held_jobs_wait_for_the_owners_approval(owner, vendor, site, held_task):
    submission = submit(vendor, held_task)
    job = job_of(submission, site)
    assert job.status == JobStatus.AWAITING_APPROVAL and submission.status == "awaiting_approval"
    assert claim(site) is None

    response = owner.client.post(f"/api/v1/jobs/{job.id}/approve")
    assert response.status_code == 200 and response.json()["status"] == "queued"
    submission.refresh_from_db()
    assert submission.status == "evaluating"
    assert claim(site)["id"] == job.id
    event = AuditEvent.objects.get(action="job.approved", object_id=str(job.id))
    assert event.actor_user == owner.user


def test_owner_rejects_a_held_job_and_the_submission_fails(
    owner, vendor, site, held_task, django_capture_on_commit_callbacks
):
    submission = submit(vendor, held_task)
    job = job_of(submission, site)
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.client.post(f"/api/v1/jobs/{job.id}/reject")
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert claim(site) is None
    submission.refresh_from_db()
    assert submission.status == "failed" and submission.status_reason == "rejected"
    assert AuditEvent.objects.filter(action="job.rejected", object_id=str(job.id)).exists()


def test_deciding_a_job_twice_is_a_conflict(owner, vendor, site, held_task):
    job = job_of(submit(vendor, held_task), site)
    owner.client.post(f"/api/v1/jobs/{job.id}/approve")
    for verb in ("approve", "reject"):
        response = owner.client.post(f"/api/v1/jobs/{job.id}/{verb}")
        assert response.status_code == 409 and error_code(response) == "invalid_state"
    assert Job.objects.get(id=job.id).status == JobStatus.QUEUED


def test_only_the_tasks_owner_approves_jobs(other_owner, vendor, second_vendor, site, held_task):
    job = job_of(submit(vendor, held_task), site)
    for persona in (other_owner, vendor, second_vendor):
        assert persona.client.post(f"/api/v1/jobs/{job.id}/approve").status_code == 404
        assert persona.client.post(f"/api/v1/jobs/{job.id}/reject").status_code == 404
    assert Job.objects.get(id=job.id).status == JobStatus.AWAITING_APPROVAL
    assert not AuditEvent.objects.filter(action__in=["job.approved", "job.rejected"]).exists()


def test_submission_without_data_sites_fails_with_a_reason(owner, vendor):
    task = make_task(owner)
    submission = submit(vendor, task)
    assert submission.status == "failed" and submission.status_reason == "no_data_sites"
    assert not Job.objects.exists()
