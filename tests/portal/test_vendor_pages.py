"""Vendor pages: request access, upload a model, follow 'my submissions'."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from marketplace.catalog.models import AccessEvent
from marketplace.catalog.services import task_access_decide
from marketplace.submissions.models import Submission
from tests.conftest import make_site, make_task, register_shard, sklearn_like_artifact
from tests.portal.helpers import fail, score, upload_model


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


def test_my_submissions_shows_each_sites_job_and_polls_while_moving(owner, vendor, web):
    north, south = make_site(owner, "north"), make_site(owner, "south")
    task = make_task(owner)
    register_shard(north, task)
    register_shard(south, task)
    submission = upload_model(vendor, task, name="MLP")
    page = web(vendor).get("/submissions/").content.decode()
    assert "MLP" in page and "north:" in page and "south:" in page and "Queued" in page
    assert 'hx-trigger="every 2s"' in page
    score(north, submission, {"roc_auc": 0.9, "accuracy": 0.8})
    fail(south, submission, "out_of_memory")
    part = web(vendor).get("/submissions/status/").content.decode()
    assert "<html" not in part
    assert "Scored" in part and "Failed" in part and "(Out of memory)" in part
    assert "hx-trigger" not in part  # everything is final: polling stops


def test_my_submissions_shows_only_my_organizations(task, vendor, second_vendor, web):
    upload_model(vendor, task, name="Acme model")
    upload_model(second_vendor, task, name="Globex model")
    page = web(second_vendor).get("/submissions/").content.decode()
    assert "Globex model" in page and "Acme model" not in page
