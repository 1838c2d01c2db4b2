"""Vendor pages: request access, upload a model, follow 'my submissions'."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from marketplace.catalog.models import AccessEvent
from marketplace.catalog.services import task_access_decide
from marketplace.submissions.models import Submission
from tests.conftest import make_site, make_task, register_shard, sklearn_like_artifact
from tests.portal.helpers import fail, score, upload_model, visible


@pytest.fixture
def task(owner):
    site = make_site(owner, "north")
    task = make_task(owner, quota_per_day=2)
    register_shard(site, task)
    task.site_handle = site
    return task


def _form(name="Logistic regression", fmt="sklearn", data=None):
    data = data if data is not None else sklearn_like_artifact().getvalue()
    return {"name": name, "artifact_format": fmt, "description": "A baseline.",
            "artifact": SimpleUploadedFile("model.joblib", data)}  # fmt: skip


def test_vendor_requests_access_to_an_invite_only_task(owner, vendor, web):
    task = make_task(owner, visibility="invite_only")
    response = web(vendor).post(f"/tasks/{task.id}/request-access/", {"note": "We build triage models."})
    assert response.status_code == 302 and response["Location"] == f"/tasks/{task.id}/"
    event = AccessEvent.objects.get(task=task, vendor=vendor.organization)
    assert event.kind == "requested" and event.note == "We build triage models."
    page = web(vendor).get(f"/tasks/{task.id}/").content.decode()
    assert "Access requested" in page


def test_a_second_request_is_refused_with_a_message(owner, vendor, web):
    task = make_task(owner, visibility="invite_only")
    client = web(vendor)
    client.post(f"/tasks/{task.id}/request-access/")
    page = client.post(f"/tasks/{task.id}/request-access/", follow=True).content.decode()
    assert "Access is already requested." in page
    assert AccessEvent.objects.filter(task=task).count() == 1


def test_approved_vendor_sees_the_upload_button_and_the_board(owner, vendor, web):
    task = make_task(owner, visibility="invite_only")
    web(vendor).post(f"/tasks/{task.id}/request-access/")
    task_access_decide(task=task, vendor_id=vendor.organization.id, approve=True, actor=owner.user)
    page = web(vendor).get(f"/tasks/{task.id}/").content.decode()
    assert "Upload a model" in page and "No scored submissions yet." in page
    assert web(vendor).get(f"/tasks/{task.id}/submit/").status_code == 200


def test_upload_form_has_browser_validation_and_a_progress_bar(task, vendor, web):
    page = web(vendor).get(f"/tasks/{task.id}/submit/").content.decode()
    assert 'name="artifact"' in page and "required" in page and "data-max-bytes=" in page
    assert 'hx-encoding="multipart/form-data"' in page and "<progress" in page
    assert "data-format-extensions" in page and "portal.js" in page
    assert "2 of 2 left today" in page


def test_upload_creates_the_submission_and_its_jobs(task, vendor, web, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = web(vendor).post(f"/tasks/{task.id}/submit/", _form())
    assert response.status_code == 302 and response["Location"] == "/submissions/"
    submission = Submission.objects.get(task=task)
    assert submission.vendor == vendor.organization and submission.created_by == vendor.user
    assert submission.name == "Logistic regression" and submission.description == "A baseline."
    assert submission.jobs.count() == 1  # Celery runs eagerly: checked and dispatched


def test_htmx_upload_redirects_the_browser(task, vendor, web):
    response = web(vendor).post(f"/tasks/{task.id}/submit/", _form(), HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Redirect"] == "/submissions/"


def test_server_refuses_an_implausible_file_and_keeps_nothing(task, vendor, web):
    response = web(vendor).post(f"/tasks/{task.id}/submit/", _form(fmt="onnx", data=b"not an onnx model"))
    assert response.status_code == 400
    assert 'class="errorlist' in response.content.decode()
    assert not Submission.objects.exists()


def test_server_refuses_missing_fields(task, vendor, web):
    response = web(vendor).post(f"/tasks/{task.id}/submit/", {"name": "", "artifact_format": "sklearn"})
    assert response.status_code == 400
    assert not Submission.objects.exists()


def test_htmx_upload_with_errors_answers_the_form_alone(task, vendor, web):
    response = web(vendor).post(f"/tasks/{task.id}/submit/", _form(data=b"x"), HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body and 'id="upload-card"' in body


def test_quota_is_enforced_and_shown(task, vendor, web):
    client = web(vendor)
    for name in ("a", "b"):
        assert client.post(f"/tasks/{task.id}/submit/", _form(name=name)).status_code == 302
    response = client.post(f"/tasks/{task.id}/submit/", _form(name="c"))
    assert response.status_code == 400 and "Daily quota of 2 submissions reached" in response.content.decode()
    assert "0 of 2" in client.get("/submissions/").content.decode()


def test_upload_to_a_task_of_another_kind_of_access_is_refused(owner, vendor, web):
    task = make_task(owner, visibility="invite_only")
    response = web(vendor).post(f"/tasks/{task.id}/submit/", _form())
    assert response.status_code == 403
    assert not Submission.objects.exists()


def _row(page: str, submission) -> str:
    return page.split(f'data-submission="{submission.id}"', 1)[1].split("</tr>", 1)[0]


def test_my_submissions_shows_pending_until_the_release_time_then_the_scores(owner, vendor, web):
    north, south = make_site(owner, "north"), make_site(owner, "south")
    task = make_task(owner, release_delay_seconds=600)
    register_shard(north, task)
    register_shard(south, task)
    submission = upload_model(vendor, task, name="MLP")
    pending = _row(web(vendor).get("/submissions/").content.decode(), submission)
    assert "Pending" in pending and "data-pending-until" in pending and "until ~" in pending
    assert 'hx-trigger="every 5s"' in web(vendor).get("/submissions/").content.decode()
    # One site done, the other failed before its model saw data, and every site done: all the same
    # to the vendor until the release time.
    score(north, submission, {"roc_auc": 0.9, "accuracy": 0.8}, show=False)
    assert _row(web(vendor).get("/submissions/status/").content.decode(), submission) == pending
    score(south, submission, {"roc_auc": 0.9, "accuracy": 0.8}, show=False)
    assert Submission.objects.get(id=submission.id).status == "scored"
    part = web(vendor).get("/submissions/status/").content.decode()
    assert _row(part, submission) == pending
    for word in ("north", "south", "Scored", "0.9000", "Queued", "Running"):
        assert word not in part, word
    visible(submission)
    part = web(vendor).get("/submissions/status/").content.decode()
    row = _row(part, submission)
    assert "<html" not in part and "Scored" in row and "roc_auc 0.9000" in row and "accuracy 0.800" in row
    assert "north" not in part and "data-per-site" not in part  # the task hides per-site values
    assert "hx-trigger" not in part  # everything is visible: polling stops


def test_a_failed_submission_shows_as_failed_without_its_reason(owner, vendor, web):
    north = make_site(owner, "north")
    task = make_task(owner)
    register_shard(north, task)
    submission = upload_model(vendor, task)
    fail(north, submission, "invalid_artifact", show=False)
    row = _row(web(vendor).get("/submissions/").content.decode(), submission)
    assert "Pending" in row and "Failed" not in row
    visible(submission)
    row = _row(web(vendor).get("/submissions/").content.decode(), submission)
    assert "Failed" in row
    for word in ("invalid_artifact", "Invalid artifact", "north"):
        assert word not in row, word


def test_per_site_values_appear_only_where_the_task_shows_them(owner, vendor, web):
    north, south = make_site(owner, "north"), make_site(owner, "south")
    shown = make_task(owner, title="Per-site task", show_per_site=True)
    hidden = make_task(owner, title="Pooled task")
    for task in (shown, hidden):
        register_shard(north, task)
        register_shard(south, task)
    a, b = upload_model(vendor, shown, name="a"), upload_model(vendor, hidden, name="b")
    for submission in (a, b):
        score(north, submission, {"roc_auc": 0.9, "accuracy": 0.8})
        score(south, submission, {"roc_auc": 0.9, "accuracy": 0.8})
    page = web(vendor).get("/submissions/").content.decode()
    assert "north: roc_auc" in _row(page, a) and "north" not in _row(page, b)
    board = web(vendor).get(f"/tasks/{hidden.id}/").content.decode()
    assert "data-per-site" not in board and "north" not in board and "0.9000" in board
    board = web(vendor).get(f"/tasks/{shown.id}/").content.decode()
    assert "data-per-site" in board and "north (" in board
    # The owner sees each site's values on its own task whatever the setting.
    assert "data-per-site" in web(owner).get(f"/tasks/{hidden.id}/").content.decode()


def test_task_and_upload_pages_show_the_privacy_budget_before_uploading(task, vendor, web):
    page = web(vendor).get(f"/tasks/{task.id}/").content.decode()
    budget = page.split(f'data-privacy-budget="{vendor.organization.id}"', 1)[1].split("</p>", 1)[0]
    assert "ε = 0.00 spent of 10" in budget and "Each upload costs ε = 1" in budget
    assert "δ = 1e-06" in budget and "Opacus" in budget
    left = int(budget.split("data-submissions-left>", 1)[1].split(" ", 1)[0])
    assert left > 0
    policy = page.split("data-privacy-policy", 1)[1].split("</section>", 1)[0]
    assert "ε = 1, δ = 1e-06 per submission" in policy and "Gaussian" in policy
    web(vendor).post(f"/tasks/{task.id}/submit/", _form(name="a"))
    page = web(vendor).get(f"/tasks/{task.id}/submit/").content.decode()
    budget = page.split("data-privacy-budget", 1)[1].split("</p>", 1)[0]
    assert "ε = 1.00 spent of 10" in budget and f"{left - 1} more uploads" in budget
    assert f"{left - 1} upload" in web(vendor).get("/submissions/").content.decode()


def test_an_upload_past_the_privacy_budget_is_refused_with_a_clear_message(owner, vendor, web):
    task = make_task(owner, quota_per_day=10, dp_epsilon_per_release=5, dp_vendor_epsilon=5, dp_task_epsilon=5)
    register_shard(make_site(owner, "north"), task)
    client = web(vendor)
    assert client.post(f"/tasks/{task.id}/submit/", _form(name="a")).status_code == 302
    response = client.post(f"/tasks/{task.id}/submit/", _form(name="b"))
    assert response.status_code == 400 and "budget" in response.content.decode().lower()
    assert list(Submission.objects.values_list("name", flat=True)) == ["a"]
    # Nothing consumed: the quota still counts one upload.
    assert "9 of 10" in client.get("/submissions/").content.decode()


def test_my_submissions_shows_only_my_organizations(task, vendor, second_vendor, web):
    upload_model(vendor, task, name="Acme model")
    upload_model(second_vendor, task, name="Globex model")
    page = web(second_vendor).get("/submissions/").content.decode()
    assert "Globex model" in page and "Acme model" not in page
