"""Onboarding on every task page: the model contract, the per-format commands, the starter kit,
the task's rules (accepted before a first upload), the fine-tuning policy."""

import io
import zipfile

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from marketplace.catalog.services import task_sample_set, task_update
from marketplace.submissions.models import RulesAcceptance, Submission
from tests.conftest import make_task, sklearn_like_artifact, upload

RULES = "One team per organization.\nNo external data from the same hospitals."


def _sample(task, owner):
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((20, 30), dtype=np.float32))
    task_sample_set(task=task, actor=owner.user, sample=SimpleUploadedFile("rows.npy", buffer.getvalue()),
                    max_bytes=10_000_000)  # fmt: skip


def test_task_page_links_the_contract_the_kit_and_the_commands_per_format(owner, web):
    task = make_task(owner, resource_limits={"memory_mb": 2048, "cpus": 2, "timeout_seconds": 600, "max_output_mb": 32})
    page = web(None).get(f"/tasks/{task.id}/").content.decode()
    onboarding = page.split("data-onboarding", 1)[1].split("</section>", 1)[0]
    assert 'href="/model-contract/"' in onboarding and f'href="/tasks/{task.id}/starter-kit.zip"' in onboarding
    for fmt in ("sklearn", "torchscript", "onnx", "python_package"):
        assert f"--format {fmt}" in onboarding, fmt
    assert ("python -m evaluator dry-run --format sklearn --model model.joblib --sample &lt;your-sample.npy&gt; "
            "--task-type binary_classification --n-classes 2 --memory-mb 2048 --cpus 2 --timeout-seconds 600 "
            "--max-output-mb 32") in onboarding  # fmt: skip


def test_the_model_contract_is_a_page(db, web):
    page = web(None).get("/model-contract/").content.decode()
    assert "The vendor&#x27;s model contract" in page or "The vendor's model contract" in page
    assert "<table>" in page and "torch.jit.save" in page


def test_starter_kit_holds_the_examples_the_sample_and_the_exact_command(owner, web):
    task = make_task(owner, rules=RULES)
    _sample(task, owner)
    response = web(None).get(f"/tasks/{task.id}/starter-kit.zip")
    assert response["Content-Type"] == "application/zip" and "attachment" in response["Content-Disposition"]
    kit = zipfile.ZipFile(io.BytesIO(response.content))
    names = set(kit.namelist())
    assert {"README.md", "model-contract.md", "task.json", "sample.npy", "examples/_common.py",
            "examples/make_sklearn_model.py", "examples/make_torchscript_model.py", "examples/make_onnx_model.py",
            "examples/make_python_package.py", "examples/python_package/model.py"} <= names  # fmt: skip
    readme = kit.read("README.md").decode()
    assert "python -m evaluator dry-run --format onnx --model model.onnx --sample sample.npy" in readme
    assert "No external data" in readme
    assert np.load(io.BytesIO(kit.read("sample.npy"))).shape == (20, 30)


def test_starter_kit_of_an_invite_only_task_is_not_for_outsiders(owner, outsider, web):
    task = make_task(owner, visibility="invite_only")
    assert web(outsider).get(f"/tasks/{task.id}/starter-kit.zip").status_code == 404
    assert web(owner).get(f"/tasks/{task.id}/starter-kit.zip").status_code == 200


def test_fine_tuning_policy_is_shown_as_the_task_holds_it(owner, web):
    closed = make_task(owner, title="No FL")
    assert "data-fine-tuning-off" in web(None).get(f"/tasks/{closed.id}/").content.decode()
    task = make_task(owner, title="FL", fine_tuning_allowed=True, fl_noise_multiplier=1.3, fl_epsilon_cap=4.0)
    policy = web(None).get(f"/tasks/{task.id}/").content.decode().split("data-fine-tuning-policy", 1)[1]
    policy = policy.split("</section>", 1)[0]
    assert "Allowed" in policy and "1.3" in policy and "ε = 4" in policy


def test_owner_writes_the_rules_in_the_task_form(owner, web):
    task = make_task(owner)
    page = web(owner).get(f"/manage/tasks/{task.id}/edit/").content.decode()
    assert 'name="rules"' in page


def test_a_vendor_accepts_the_rules_before_its_first_upload_through_the_portal(owner, vendor, web):
    task = make_task(owner, rules=RULES)
    client = web(vendor)
    page = client.get(f"/tasks/{task.id}/").content.decode()
    assert "No external data" in page and "data-accept-rules" in page
    form = {"name": "m", "artifact_format": "sklearn",
            "artifact": SimpleUploadedFile("model.joblib", sklearn_like_artifact().getvalue())}  # fmt: skip
    response = client.post(f"/tasks/{task.id}/submit/", form)
    assert response.status_code == 400 and "Accept the task" in response.content.decode()
    assert not Submission.objects.exists()
    form["artifact"].seek(0)
    response = client.post(f"/tasks/{task.id}/submit/", {**form, "accept_rules": "on"})
    assert response.status_code == 302 and Submission.objects.count() == 1
    assert RulesAcceptance.objects.get(task=task).accepted_by == vendor.user
    assert "data-rules-accepted" in client.get(f"/tasks/{task.id}/").content.decode()


def test_the_api_refuses_an_upload_until_the_rules_are_accepted_and_again_after_they_change(owner, vendor):
    task = make_task(owner, rules=RULES)
    response = upload(vendor, task)
    assert response.status_code == 409 and response.json()["error"]["code"] == "rules_not_accepted"
    assert vendor.client.get(f"/api/v1/tasks/{task.id}/quota").json()["rules_accepted"] is False
    accepted = vendor.client.post(f"/api/v1/tasks/{task.id}/rules/accept")
    assert accepted.status_code == 200 and len(accepted.json()["rules_sha256"]) == 64
    assert upload(vendor, task).status_code == 201
    task_update(task=task, actor=owner.user, changes={"rules": RULES + "\nNew: no ensembles."})
    assert upload(vendor, task).status_code == 409
    vendor.client.post(f"/api/v1/tasks/{task.id}/rules/accept")
    assert upload(vendor, task).status_code == 201


def test_a_task_without_rules_needs_no_acceptance(owner, vendor):
    task = make_task(owner)
    assert upload(vendor, task).status_code == 201
    response = vendor.client.post(f"/api/v1/tasks/{task.id}/rules/accept")
    assert response.status_code == 409 and response.json()["error"]["code"] == "no_rules"


@pytest.mark.parametrize("persona", ["owner", "outsider"])
def test_only_a_vendor_accepts_rules(owner, outsider, persona, web):
    task = make_task(owner, rules=RULES)
    who = {"owner": owner, "outsider": outsider}[persona]
    assert web(who).post(f"/tasks/{task.id}/rules/accept/").status_code == 403
    assert not RulesAcceptance.objects.exists()
