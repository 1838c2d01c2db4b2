"""The page of one submission: the vendor's view (scores at their release time, nomination,
fine-tuning), the owner's view (jobs per site, decisions with a reason), and the API's reason."""

import pytest

from marketplace.jobs.models import Job
from marketplace.leaderboard.services import leaderboard_aggregate
from marketplace.submissions.models import Submission
from tests.conftest import make_site, make_task, register_shard
from tests.portal.helpers import score, upload_model, visible


@pytest.fixture
def gated(owner, vendor):
    north, south = make_site(owner, "north"), make_site(owner, "south")
    task = make_task(owner, requires_job_approval=True, release_delay_seconds=600)
    register_shard(north, task)
    register_shard(south, task)
    submission = upload_model(vendor, task, name="Gated model")
    jobs = {j.site.name: j for j in submission.jobs.select_related("site")}
    return {"task": task, "submission": submission, "jobs": jobs, "north": north, "south": south}


def test_vendor_sees_pending_then_its_scores_on_the_submission_page(owner, vendor, web):
    north = make_site(owner, "north")
    task = make_task(owner, release_delay_seconds=600, metrics=[{"name": "roc_auc", "decimals": 4}])
    register_shard(north, task)
    submission = upload_model(vendor, task, name="MLP")
    score(north, submission, {"roc_auc": 0.91234}, show=False)
    page = web(vendor).get(f"/submissions/{submission.id}/").content.decode()
    assert "Pending until about" in page and "0.9123" not in page and "north" not in page
    visible(submission)
    page = web(vendor).get(f"/submissions/{submission.id}/").content.decode()
    scores = page.split("data-scores", 1)[1].split("</dl>", 1)[0]
    assert "roc_auc" in scores and "0.9123" in scores and "higher is better" in scores
    assert "Nominate as final" in page and "Jobs per site" not in page
    assert "/how-scores-are-computed/" in page


def test_my_submissions_links_each_model_to_its_page(owner, vendor, web):
    task = make_task(owner)
    submission = upload_model(vendor, task, name="Linked")
    page = web(vendor).get("/submissions/").content.decode()
    assert f'href="/submissions/{submission.id}/"' in page


def test_owner_sees_jobs_per_site_and_decides_from_the_submission_page(gated, owner, web):
    client = web(owner)
    url = f"/submissions/{gated['submission'].id}/"
    page = client.get(url).content.decode()
    assert "Jobs per site" in page and "north" in page and "south" in page
    north, south = gated["jobs"]["north"], gated["jobs"]["south"]
    response = client.post(f"/manage/approvals/jobs/{north.id}/approve/", {"next": url})
    assert response.status_code == 302 and response["Location"] == url
    response = client.post(f"/manage/approvals/jobs/{south.id}/reject/", {"next": url, "reason": "Site south is under audit"})
    assert response["Location"] == url
    assert Job.objects.get(id=north.id).status == "queued" and Job.objects.get(id=south.id).status == "rejected"
    assert Submission.objects.get(id=gated["submission"].id).rejection_reason == "Site south is under audit"


def test_next_never_leaves_the_site(gated, owner, web):
    job = gated["jobs"]["north"]
    response = web(owner).post(f"/manage/approvals/jobs/{job.id}/approve/", {"next": "https://evil.example/"})
    assert response["Location"] == "/manage/approvals/"


def test_the_reject_reason_reaches_the_vendor_with_the_outcome_never_earlier(gated, owner, vendor, web):
    for job in gated["jobs"].values():
        web(owner).post(f"/manage/approvals/jobs/{job.id}/reject/", {"reason": "We do not run pickles"})
    submission = gated["submission"]
    leaderboard_aggregate(submission_id=submission.id)
    submission.refresh_from_db()
    assert submission.status == "failed" and submission.results_visible_at is not None
    api = vendor.client.get(f"/api/v1/submissions/{submission.id}").json()
    page = web(vendor).get(f"/submissions/{submission.id}/").content.decode()
    assert api["status"] == "pending" and api["rejection_reason"] == ""
    assert "We do not run pickles" not in page
    visible(submission)
    api = vendor.client.get(f"/api/v1/submissions/{submission.id}").json()
    assert api["status"] == "failed" and api["rejection_reason"] == "We do not run pickles"
    assert "We do not run pickles" in web(vendor).get(f"/submissions/{submission.id}/").content.decode()
    listed = vendor.client.get("/api/v1/submissions").json()["results"][0]
    assert listed["rejection_reason"] == "We do not run pickles"
    assert "We do not run pickles" in web(vendor).get("/submissions/").content.decode()
    # The owner always sees it.
    assert owner.client.get(f"/api/v1/submissions/{submission.id}").json()["rejection_reason"] == "We do not run pickles"


def test_a_too_long_reason_is_refused_and_nothing_changes(gated, owner, web):
    job = gated["jobs"]["north"]
    response = web(owner).post(f"/manage/approvals/jobs/{job.id}/reject/", {"reason": "x" * 501}, follow=True)
    assert "the limit is 500" in response.content.decode()
    assert Job.objects.get(id=job.id).status == "awaiting_approval"


def test_submission_page_is_for_its_vendor_and_the_tasks_owner_only(gated, other_owner, second_vendor, outsider, web):
    url = f"/submissions/{gated['submission'].id}/"
    assert web(second_vendor).get(url).status_code == 404
    assert web(other_owner).get(url).status_code == 404
    assert web(outsider).get(url).status_code == 404
    assert web(None).get(url)["Location"].startswith("/accounts/login/")


def test_vendor_nominates_from_the_submission_page_and_comes_back(owner, vendor, web):
    north = make_site(owner, "north")
    task = make_task(owner)
    register_shard(north, task)
    submission = upload_model(vendor, task)
    score(north, submission, {"roc_auc": 0.8, "accuracy": 0.7})
    url = f"/submissions/{submission.id}/"
    response = web(vendor).post(f"/submissions/{submission.id}/nominate/", {"next": url})
    assert response["Location"] == url and Submission.objects.get(id=submission.id).is_final


def test_the_api_rejects_with_a_reason_for_the_vendor(gated, owner):
    job = gated["jobs"]["north"]
    response = owner.client.post(f"/api/v1/jobs/{job.id}/reject", {"reason": "Not on this site"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert Submission.objects.get(id=gated["submission"].id).rejection_reason == "Not on this site"
    too_long = owner.client.post(f"/api/v1/jobs/{gated['jobs']['south'].id}/reject", {"reason": "x" * 501}, format="json")
    assert too_long.status_code == 400 and Job.objects.get(id=gated["jobs"]["south"].id).status == "awaiting_approval"
