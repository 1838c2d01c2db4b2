"""Vendor uploads: checked before anything is kept, counted against quotas, private to the vendor."""

import hashlib
import io
import pickle
import tarfile
import zipfile

import pytest

from evaluator.privacy.zcdp import epsilon_for_rho, rho_for_epsilon
from marketplace.audit.models import AuditEvent
from marketplace.submissions.models import Submission
from tests.conftest import make_task, register_shard, upload
from tests.hub.helpers import error_code, files_under, submit


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_with_symlink() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("model.py")
        info.size = 0
        archive.addfile(info, io.BytesIO())
        link = tarfile.TarInfo("weights")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    return buffer.getvalue()


def test_upload_is_stored_hashed_and_audited(vendor, open_task, settings):
    data = pickle.dumps({"w": [1, 2]}, protocol=4)
    response = upload(vendor, open_task, data=data)
    assert response.status_code == 201, response.content
    submission = Submission.objects.get(id=response.json()["id"])
    assert submission.vendor == vendor.organization and submission.status == "checking"
    assert submission.sha256 == hashlib.sha256(data).hexdigest() == response.json()["sha256"]
    assert submission.size == len(data)
    stored = files_under(settings.MEDIA_ROOT)
    assert len(stored) == 1 and stored[0].read_bytes() == data
    event = AuditEvent.objects.get(action="submission.created", object_id=str(submission.id))
    assert event.actor_user == vendor.user and event.data["sha256"] == submission.sha256


def test_upload_is_checked_and_dispatched_after_commit(
    vendor, open_task, site, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = upload(vendor, open_task)
    assert len(callbacks) == 1
    submission = Submission.objects.get(id=response.json()["id"])
    assert submission.status == "evaluating"
    assert [job.site_id for job in submission.jobs.all()] == [site.site.id]


def test_upload_over_the_size_cap_is_413_and_leaves_nothing(vendor, open_task, settings):
    settings.VAULTBENCH_MAX_ARTIFACT_BYTES = 64
    response = upload(vendor, open_task, data=pickle.dumps(list(range(100)), protocol=4))
    assert response.status_code == 413
    assert error_code(response) == "too_large"
    assert "limit is 64 bytes" in response.json()["error"]["message"]
    assert not Submission.objects.exists()
    assert files_under(settings.MEDIA_ROOT) == []
    assert not AuditEvent.objects.filter(action="submission.created").exists()


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        ("sklearn", b"#!/bin/sh\nrm -rf /\n"),
        ("sklearn", b"\x80"),
        ("onnx", b"PK\x03\x04 not a protobuf"),
        ("torchscript", b"not a zip at all"),
        ("torchscript", zip_bytes({"archive/data.pkl": b"x"})),  # torch.save, not torch.jit.save
        ("python_package", zip_bytes({"weights.safetensors": b"x"})),  # no model.py
        ("python_package", zip_bytes({"model.py": b"", "../escape.py": b""})),
        ("python_package", tar_with_symlink()),
        ("python_package", b"neither zip nor tar"),
    ],
)
def test_implausible_artifact_is_400_and_leaves_nothing(vendor, open_task, settings, fmt, data):
    response = upload(vendor, open_task, data=data, fmt=fmt)
    assert response.status_code == 400, response.content
    assert error_code(response) == "implausible_format"
    assert response.json()["error"]["message"]
    assert not Submission.objects.exists()
    assert files_under(settings.MEDIA_ROOT) == []


def test_plausible_archives_are_accepted(vendor, open_task):
    torchscript = zip_bytes({"m/data.pkl": b"x", "m/code/__torch__/m.py": b"", "m/version": b"3"})
    assert upload(vendor, open_task, data=torchscript, fmt="torchscript").status_code == 201
    package = zip_bytes({"model.py": b"def load(p): ...", "weights.safetensors": b"x"})
    assert upload(vendor, open_task, data=package, fmt="python_package", name="m2").status_code == 201
    assert upload(vendor, open_task, data=b"\x08\x07\x12\x00", fmt="onnx", name="m3").status_code == 201


def test_empty_artifact_is_refused(vendor, open_task, settings):
    response = upload(vendor, open_task, data=b"")
    assert response.status_code == 400
    assert error_code(response) == "empty_artifact"
    assert not Submission.objects.exists() and files_under(settings.MEDIA_ROOT) == []


def test_declared_sha256_must_match(vendor, open_task, settings):
    artifact = io.BytesIO(pickle.dumps(1, protocol=4))
    artifact.name = "m.joblib"
    response = vendor.client.post(
        "/api/v1/submissions",
        {
            "task": open_task.id,
            "name": "m",
            "artifact_format": "sklearn",
            "artifact": artifact,
            "sha256": "0" * 64,
        },
        format="multipart",
    )
    assert response.status_code == 400
    assert error_code(response) == "sha256_mismatch"
    assert not Submission.objects.exists() and files_under(settings.MEDIA_ROOT) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"task": "abc", "name": "m", "artifact_format": "sklearn"},
        {"task": 1, "name": "m", "artifact_format": "pickle"},
        {"task": 1, "artifact_format": "sklearn"},
    ],
)
def test_bad_upload_fields_are_a_clear_400(vendor, open_task, fields):
    artifact = io.BytesIO(pickle.dumps(1, protocol=4))
    artifact.name = "m.joblib"
    fields = {**fields, "task": open_task.id if fields["task"] == 1 else fields["task"], "artifact": artifact}
    response = vendor.client.post("/api/v1/submissions", fields, format="multipart")
    assert response.status_code == 400
    assert error_code(response) == "invalid"
    assert not Submission.objects.exists()


def test_upload_without_a_file_is_a_400(vendor, open_task):
    response = vendor.client.post(
        "/api/v1/submissions",
        {"task": open_task.id, "name": "m", "artifact_format": "sklearn"},
        format="multipart",
    )
    assert response.status_code == 400
    assert "artifact" in response.json()["error"]["details"]


def test_json_upload_is_refused_with_415(vendor, open_task):
    response = vendor.client.post("/api/v1/submissions", {"task": open_task.id}, format="json")
    assert response.status_code == 415
    assert "error" in response.json()


def test_daily_quota_refuses_the_next_upload_with_429(owner, vendor, site, settings):
    task = make_task(owner, quota_per_day=2)
    register_shard(site, task)
    assert upload(vendor, task, name="a").status_code == 201
    assert upload(vendor, task, name="b").status_code == 201
    files_before = files_under(settings.MEDIA_ROOT)
    response = upload(vendor, task, name="c")
    assert response.status_code == 429
    assert error_code(response) == "quota_exceeded"
    assert Submission.objects.filter(task=task).count() == 2
    assert files_under(settings.MEDIA_ROOT) == files_before
    quota = vendor.client.get(f"/api/v1/tasks/{task.id}/quota").json()
    privacy = quota.pop("privacy")
    assert privacy["epsilon_per_release"] == 1.0 and privacy["vendor_epsilon_spent"] == pytest.approx(
        epsilon_for_rho(2 * rho_for_epsilon(1.0, 1e-6), 1e-6)
    )
    assert quota == {
        "quota_per_day": 2,
        "quota_total": None,
        "used_today": 2,
        "used_total": 2,
        "remaining_today": 0,
        "remaining_total": None,
        "rules_accepted": True,  # the task has no rules
    }


def test_quota_is_per_vendor(owner, vendor, second_vendor, site):
    task = make_task(owner, quota_per_day=1)
    register_shard(site, task)
    assert upload(vendor, task).status_code == 201
    assert upload(second_vendor, task).status_code == 201
    assert upload(vendor, task, name="again").status_code == 429


def test_total_quota_refuses_with_429(owner, vendor, site):
    task = make_task(owner, quota_per_day=5, quota_total=1)
    register_shard(site, task)
    assert upload(vendor, task).status_code == 201
    response = upload(vendor, task, name="b")
    assert response.status_code == 429 and "Total quota" in response.json()["error"]["message"]


def test_closed_task_refuses_uploads(owner, vendor, open_task):
    owner.client.post(f"/api/v1/tasks/{open_task.id}/close")
    response = upload(vendor, open_task)
    assert response.status_code == 409
    assert error_code(response) == "task_not_open"
    assert not Submission.objects.exists()


def test_owner_cannot_upload(owner, open_task):
    response = upload(owner, open_task)
    assert response.status_code == 403
    assert error_code(response) == "wrong_role"


def test_vendor_cannot_upload_to_a_draft_it_cannot_see(owner, vendor, settings):
    from marketplace.catalog.services import task_create
    from tests.conftest import TASK_SPEC

    draft = task_create(organization=owner.organization, actor=owner.user, spec=TASK_SPEC)
    response = upload(vendor, draft)
    assert response.status_code == 404
    assert not Submission.objects.exists() and files_under(settings.MEDIA_ROOT) == []


def test_vendor_lists_only_its_own_submissions(
    vendor, second_vendor, owner, open_task, django_assert_max_num_queries
):
    for i in range(4):
        upload(vendor, open_task, name=f"v{i}")
    upload(second_vendor, open_task, name="g0")
    with django_assert_max_num_queries(4):
        response = vendor.client.get("/api/v1/submissions")
    assert sorted(s["name"] for s in response.json()["results"]) == ["v0", "v1", "v2", "v3"]
    assert [s["name"] for s in second_vendor.client.get("/api/v1/submissions").json()["results"]] == ["g0"]
    # The task's owner sees every submission made to its task.
    assert owner.client.get("/api/v1/submissions").json()["count"] == 5


def test_other_owner_sees_no_submissions(other_owner, vendor, open_task):
    upload(vendor, open_task)
    assert other_owner.client.get("/api/v1/submissions").json()["results"] == []


def test_vendor_never_sees_another_vendors_submission(vendor, second_vendor, open_task):
    submission = submit(vendor, open_task)
    foreign = second_vendor.client.get(f"/api/v1/submissions/{submission.id}")
    missing = second_vendor.client.get("/api/v1/submissions/999999")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


def test_submission_detail_shows_jobs_to_the_owner_only(vendor, owner, open_task):
    submission = submit(vendor, open_task)
    body = owner.client.get(f"/api/v1/submissions/{submission.id}").json()
    assert [(j["site"], j["status"]) for j in body["jobs"]] == [("site-a", "queued")]
    assert not vendor.client.get(f"/api/v1/submissions/{submission.id}").json().get("jobs")


def test_vendor_downloads_its_own_artifact(vendor, open_task):
    data = pickle.dumps({"mine": True}, protocol=4)
    submission_id = upload(vendor, open_task, data=data).json()["id"]
    response = vendor.client.get(f"/api/v1/submissions/{submission_id}/artifact")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == data


def test_vendor_cannot_download_another_vendors_artifact(vendor, second_vendor, open_task):
    submission_id = upload(vendor, open_task).json()["id"]
    response = second_vendor.client.get(f"/api/v1/submissions/{submission_id}/artifact")
    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_owner_sees_submission_but_cannot_download_vendor_artifact(owner, vendor, open_task):
    submission_id = upload(vendor, open_task).json()["id"]
    assert owner.client.get(f"/api/v1/submissions/{submission_id}").status_code == 200
    assert owner.client.get(f"/api/v1/submissions/{submission_id}/artifact").status_code == 404


def test_visitor_cannot_list_or_download_submissions(visitor, vendor, open_task):
    submission_id = upload(vendor, open_task).json()["id"]
    assert visitor.get("/api/v1/submissions").status_code in (401, 403)
    assert visitor.get(f"/api/v1/submissions/{submission_id}").status_code in (401, 403)
    assert visitor.get(f"/api/v1/submissions/{submission_id}/artifact").status_code in (401, 403)
