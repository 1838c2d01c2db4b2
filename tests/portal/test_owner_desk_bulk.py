"""The owner's desk at scale: bulk approve/reject/release over filters, pagination, the close summary.

The replay of issue 11's "3 models on 4 sites": 12 jobs to approve and their results to
release took 12 + 12 clicks one row at a time; here it takes one click each."""

import pytest

from marketplace.jobs.models import Job
from marketplace.submissions.models import Submission
from tests.conftest import make_site, make_task, register_shard
from tests.portal.helpers import hold, upload_model


@pytest.fixture
def queue(owner, vendor, second_vendor):
    sites = [make_site(owner, f"site-{i}") for i in range(4)]
    task = make_task(owner, title="Gated", requires_job_approval=True, requires_release_approval=True)
    other = make_task(owner, title="Other", requires_job_approval=True)
    for site in sites:
        register_shard(site, task)
        register_shard(site, other)
    models = [upload_model(vendor, task, name=f"model-{i}") for i in range(2)]
    models.append(upload_model(second_vendor, task, name="model-2"))
    elsewhere = upload_model(vendor, other, name="elsewhere")
    return {"task": task, "other": other, "sites": sites, "models": models, "elsewhere": elsewhere}


def _awaiting(task):
    return Job.objects.filter(submission__task=task, status="awaiting_approval")


def test_three_models_on_four_sites_approve_in_one_click_and_release_in_one(queue, owner, web):
    client = web(owner)
    task = queue["task"]
    assert _awaiting(task).count() == 12
    page = client.get(f"/manage/approvals/?task={task.id}").content.decode()
    assert "Approve all 12 matching" in page
    # Click 1: approve everything that matches the filter (this task only).
    client.post("/manage/approvals/jobs/bulk/", {"task": task.id, "action": "approve-matching"})
    assert _awaiting(task).count() == 0 and _awaiting(queue["other"]).count() == 4
    # The sites run the jobs and hold the results for release.
    for submission in queue["models"]:
        for site in queue["sites"]:
            hold(site, submission)
    page = client.get(f"/manage/approvals/?task={task.id}").content.decode()
    assert "Release all 12 matching" in page
    # Click 2: release them all.
    response = client.post("/manage/approvals/results/bulk/", {"task": task.id, "action": "release-matching"}, follow=True)
    assert "12 jobs released" in response.content.decode()
    assert set(Job.objects.filter(submission__task=task).values_list("release_decision", flat=True)) == {"approved"}


def test_bulk_approve_selected_rows_only(queue, owner, web):
    ids = list(_awaiting(queue["task"]).values_list("id", flat=True)[:3])
    response = web(owner).post("/manage/approvals/jobs/bulk/", {"action": "approve", "job": ids}, follow=True)
    assert "3 jobs approved" in response.content.decode()
    assert set(Job.objects.filter(id__in=ids).values_list("status", flat=True)) == {"queued"}
    assert _awaiting(queue["task"]).count() == 9


def test_bulk_reject_needs_a_reason_and_records_it(queue, owner, vendor, web):
    client = web(owner)
    filters = {"task": queue["task"].id, "vendor": vendor.organization.id}
    response = client.post("/manage/approvals/jobs/bulk/", {**filters, "action": "reject-matching"}, follow=True)
    assert "Give the vendor a reason" in response.content.decode()
    assert _awaiting(queue["task"]).count() == 12
    client.post("/manage/approvals/jobs/bulk/", {**filters, "action": "reject-matching", "reason": "Not this month"})
    rejected = Job.objects.filter(submission__task=queue["task"], status="rejected")
    assert rejected.count() == 8 and {j.submission.vendor_id for j in rejected} == {vendor.organization.id}
    assert set(Submission.objects.filter(task=queue["task"], vendor=vendor.organization)
               .values_list("rejection_reason", flat=True)) == {"Not this month"}  # fmt: skip


def test_bulk_with_nothing_selected_does_nothing(queue, owner, web):
    response = web(owner).post("/manage/approvals/jobs/bulk/", {"action": "approve"}, follow=True)
    assert "Select at least one job" in response.content.decode()
    assert _awaiting(queue["task"]).count() == 12


def test_a_filter_naming_someone_elses_task_matches_nothing(queue, owner, other_owner, web):
    foreign = make_task(other_owner, title="Foreign")
    response = web(owner).post("/manage/approvals/jobs/bulk/", {"task": foreign.id, "action": "approve-matching"}, follow=True)
    assert "Select at least one job" in response.content.decode()
    assert _awaiting(queue["task"]).count() == 12
    page = web(owner).get(f"/manage/approvals/?task={foreign.id}").content.decode()
    assert page.count("data-job=") == 0


def test_another_owner_cannot_bulk_decide_my_jobs(queue, other_owner, web):
    ids = list(_awaiting(queue["task"]).values_list("id", flat=True))
    web(other_owner).post("/manage/approvals/jobs/bulk/", {"action": "approve", "job": ids})
    web(other_owner).post("/manage/approvals/jobs/bulk/", {"action": "approve-matching"})
    assert _awaiting(queue["task"]).count() == 12


def test_a_bad_bulk_action_is_refused(queue, owner, web):
    response = web(owner).post("/manage/approvals/jobs/bulk/", {"action": "approve-everything"}, follow=True)
    assert "Choose approve or reject" in response.content.decode()
    assert web(owner).get("/manage/approvals/jobs/bulk/").status_code == 405


def test_approval_queue_is_paginated(owner, vendor, web):
    sites = [make_site(owner, f"s{i}") for i in range(6)]
    task = make_task(owner, requires_job_approval=True, quota_per_day=20)
    for site in sites:
        register_shard(site, task)
    for i in range(10):
        upload_model(vendor, task, name=f"m{i}")  # 60 jobs
    page = web(owner).get("/manage/approvals/").content.decode()
    assert page.count("data-job=") == 50 and "Page 1 of 2" in page and "Approve all 60 matching" in page
    page = web(owner).get("/manage/approvals/?jobs_page=2").content.decode()
    assert page.count("data-job=") == 10


def test_owner_desk_is_paginated(owner, web):
    for i in range(27):
        make_task(owner, title=f"Task {i:02d}")
    page = web(owner).get("/manage/").content.decode()
    assert page.count('href="/manage/tasks/') - page.count('href="/manage/tasks/new/') == 25
    assert "Page 1 of 2" in page and "(27)" in page


def test_closing_asks_for_confirmation_with_a_summary(queue, owner, web):
    client = web(owner)
    page = client.get(f"/manage/tasks/{queue['task'].id}/").content.decode()
    assert f'href="/manage/tasks/{queue["task"].id}/close/"' in page
    page = client.get(f"/manage/tasks/{queue['task'].id}/close/").content.decode()
    summary = page.split("data-close-summary", 1)[1].split("</section>", 1)[0]
    assert "3 from 2 vendors" in summary and "Jobs awaiting your approval</dt><dd>12" in summary
    assert "Work is still in flight" in page
    queue["task"].refresh_from_db()
    assert queue["task"].status == "open"  # showing the page closes nothing
