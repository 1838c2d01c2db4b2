"""Data-owner pages: the task form (every policy field), open/close, sites, approvals, ledger."""

import csv
import io
import re

import pytest

from marketplace.catalog.models import Task
from marketplace.catalog.services import task_access_request
from marketplace.core.tokens import token_hash
from marketplace.jobs.models import Job
from marketplace.sites.models import Site, SiteToken
from tests.conftest import make_site, make_task, register_shard
from tests.portal.helpers import score, upload_model

FULL_FORM = {
    "title": "ICU mortality", "description": "Predict in-hospital death.", "task_type": "binary_classification",
    "n_features": "12", "dtype": "float64", "n_classes": "2", "primary_metric": "roc_auc",
    "metric_roc_auc": "on", "decimals_roc_auc": "3", "metric_log_loss": "on", "decimals_log_loss": "2",
    "visibility": "invite_only", "opens_at": "", "closes_at": "2031-01-31T12:00",
    "quota_per_day": "3", "quota_total": "20", "memory_mb": "2048", "cpus": "2", "timeout_seconds": "600",
    "max_output_mb": "32", "show_per_site": "on", "min_test_rows": "40", "public_split_fraction": "0.5",
    "leaderboard_mode": "ladder", "requires_job_approval": "on", "fine_tuning_allowed": "on",
    "final_submissions": "3", "requires_release_approval": "on", "failed_jobs_consume_quota": "",
    "dp_epsilon_per_release": "0.5", "dp_delta": "1e-7", "dp_vendor_epsilon": "6", "dp_task_epsilon": "15",
    "release_delay_seconds": "120", "ladder_threshold": "0.02",
}  # fmt: skip


def test_owner_creates_a_task_with_every_policy_field(owner, web):
    response = web(owner).post("/manage/tasks/new/", FULL_FORM)
    task = Task.objects.get(title="ICU mortality")
    assert response.status_code == 302 and response["Location"] == f"/manage/tasks/{task.id}/"
    assert task.organization == owner.organization and task.status == "draft"
    assert task.input_spec == {"n_features": 12, "dtype": "float64", "n_classes": 2}
    assert task.metrics == [{"name": "roc_auc", "decimals": 3}, {"name": "log_loss", "decimals": 2}]
    assert task.visibility == "invite_only" and task.closes_at.year == 2031
    assert (task.quota_per_day, task.quota_total, task.min_test_rows) == (3, 20, 40)
    assert task.resource_limits == {
        "memory_mb": 2048,
        "cpus": 2.0,
        "timeout_seconds": 600,
        "max_output_mb": 32,
    }
    assert task.show_per_site and task.requires_job_approval and task.fine_tuning_allowed
    assert task.public_split_fraction == 0.5 and task.leaderboard_mode == "ladder"
    assert (
        task.final_submissions == 3 and task.requires_release_approval and not task.failed_jobs_consume_quota
    )
    assert (task.dp_epsilon_per_release, task.dp_delta, task.dp_vendor_epsilon, task.dp_task_epsilon) == (
        0.5, 1e-7, 6.0, 15.0,
    )  # fmt: skip
    assert (task.release_delay_seconds, task.ladder_threshold) == (120, 0.02)


def test_a_new_task_takes_the_privacy_defaults(owner, web):
    form = {k: v for k, v in FULL_FORM.items() if not k.startswith(("dp_", "release_", "ladder_"))}
    page = web(owner).get("/manage/tasks/new/").content.decode()
    for name, value in (("dp_epsilon_per_release", "1.0"), ("dp_delta", "1e-06"), ("dp_vendor_epsilon", "10.0"),
                        ("dp_task_epsilon", "20.0"), ("release_delay_seconds", "360"), ("ladder_threshold", "0.01")):  # fmt: skip
        assert re.search(rf'<input[^>]*name="{name}"[^>]*value="{re.escape(value)}"', page), name
    # A form without them keeps the defaults.
    assert web(owner).post("/manage/tasks/new/", form).status_code == 302
    task = Task.objects.get()
    assert (task.dp_epsilon_per_release, task.dp_delta, task.dp_vendor_epsilon, task.dp_task_epsilon) == (
        1.0, 1e-6, 10.0, 20.0,
    )  # fmt: skip
    assert (task.release_delay_seconds, task.ladder_threshold) == (360, 0.01)


def test_a_regression_task_needs_its_target_range(owner, web):
    regression = {**FULL_FORM, "task_type": "regression", "n_classes": "", "metric_roc_auc": "", "metric_log_loss": "",
                  "metric_mean_absolute_error": "on", "primary_metric": "mean_absolute_error"}  # fmt: skip
    response = web(owner).post("/manage/tasks/new/", regression)
    assert response.status_code == 400
    assert "target_range" in " ".join(response.context["form"].errors["target_min"])
    response = web(owner).post("/manage/tasks/new/", {**regression, "target_min": "5", "target_max": "1"})
    assert response.status_code == 400 and "lo < hi" in " ".join(response.context["form"].errors["target_min"])
    response = web(owner).post("/manage/tasks/new/", {**regression, "target_min": "0", "target_max": "50"})
    assert response.status_code == 302
    assert Task.objects.get().input_spec == {"n_features": 12, "dtype": "float64", "target_range": [0.0, 50.0]}


def test_task_form_shows_the_services_refusals_on_the_form(owner, web):
    bad = {**FULL_FORM, "metric_log_loss": "", "metric_r2": "on", "primary_metric": "roc_auc"}
    response = web(owner).post("/manage/tasks/new/", bad)
    assert response.status_code == 400
    assert "does not apply to a binary_classification task" in response.content.decode()
    response = web(owner).post("/manage/tasks/new/", {**FULL_FORM, "opens_at": "2031-02-01T00:00"})
    assert response.status_code == 400 and "closes_at must be after opens_at" in response.content.decode()
    assert not Task.objects.exists()


def test_task_form_labels_every_input(owner, web):
    page = web(owner).get("/manage/tasks/new/").content.decode()
    import re

    for input_id in re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', page):
        assert f'for="{input_id}"' in page, input_id


def test_owner_edits_a_draft_then_only_the_policy_once_open(owner, web):
    task = make_task(owner)
    client = web(owner)
    form = {**FULL_FORM, "visibility": "public", "requires_job_approval": ""}
    response = client.post(f"/manage/tasks/{task.id}/edit/", form)
    assert response.status_code == 302
    task.refresh_from_db()
    # Opened already (make_task opens it): the structural fields stayed, the policy changed.
    assert task.input_spec["n_features"] == 30 and task.title == "ICU mortality" and task.quota_per_day == 3
    page = client.get(f"/manage/tasks/{task.id}/edit/").content.decode()
    assert "Fixed once the task has opened." in page


def test_owner_opens_and_closes_a_task(owner, web):
    response = web(owner).post("/manage/tasks/new/", {**FULL_FORM, "closes_at": ""})
    task = Task.objects.get()
    client = web(owner)
    assert client.post(f"/manage/tasks/{task.id}/open/").status_code == 302
    task.refresh_from_db()
    assert task.status == "open" and task.opens_at is not None
    page = client.post(f"/manage/tasks/{task.id}/open/", follow=True).content.decode()
    assert "Only a draft task can be opened." in page
    page = client.get(f"/manage/tasks/{task.id}/close/").content.decode()
    assert "Close the task" in page and task.status == "open"
    client.post(f"/manage/tasks/{task.id}/close/")
    task.refresh_from_db()
    assert task.status == "closed"
    assert response.status_code == 302


def test_owner_creates_a_site_and_sees_its_token_once(owner, web):
    client = web(owner)
    page = client.post("/manage/sites/", {"name": "east"}).content.decode()
    site = Site.objects.get(name="east")
    raw = page.split("data-site-token", 1)[0].rsplit('value="', 1)[1].split('"', 1)[0]
    assert raw.startswith("vbs_") and SiteToken.objects.get(site=site).key_hash == token_hash(raw)
    assert raw not in client.get("/manage/sites/").content.decode()


def test_only_an_admin_creates_sites(owner, outsider, web):
    from marketplace.accounts.models import Membership

    Membership.objects.create(user=outsider.user, organization=owner.organization, role="member")
    page = web(outsider).post("/manage/sites/", {"name": "east"}).content.decode()
    assert "Only an admin of the organization may do this." in page
    assert not Site.objects.filter(name="east").exists()


def test_sites_show_live_heartbeat_status_and_shards(owner, web):
    site = make_site(owner, "north")
    task = make_task(owner)
    register_shard(site, task, rows=77)
    client = web(owner)
    assert "Never seen" in client.get("/manage/sites/status/").content.decode()
    site.client.post("/api/v1/agent/heartbeat", {"agent_id": "north-1", "capabilities": {}}, format="json")
    part = client.get("/manage/sites/status/").content.decode()
    assert "Online" in part and "north-1" in part and 'hx-trigger="every 5s"' in part
    page = client.get(f"/manage/sites/{site.site.id}/").content.decode()
    assert "Breast cancer screening" in page and ">77<" in page
    page = client.get(f"/manage/tasks/{task.id}/").content.decode()
    assert "north" in page and ">77<" in page


def test_approval_queue_approves_and_rejects_access_requests(owner, vendor, second_vendor, web):
    task = make_task(owner, visibility="invite_only")
    task_access_request(task=task, vendor=vendor.organization, actor=vendor.user, note="please")
    task_access_request(task=task, vendor=second_vendor.organization, actor=second_vendor.user)
    client = web(owner)
    page = client.get("/manage/approvals/").content.decode()
    assert "Acme Models" in page and "Globex AI" in page and "please" in page
    client.post(f"/manage/approvals/tasks/{task.id}/vendors/{vendor.organization.id}/approve/")
    client.post(f"/manage/approvals/tasks/{task.id}/vendors/{second_vendor.organization.id}/reject/")
    from marketplace.catalog.selectors import access_state

    assert access_state(task=task, vendor=vendor.organization) == "approved"
    assert access_state(task=task, vendor=second_vendor.organization) == "rejected"
    assert "No access request waits for you." in client.get("/manage/approvals/").content.decode()


def test_approval_queue_approves_and_rejects_held_jobs(owner, vendor, web):
    north, south = make_site(owner, "north"), make_site(owner, "south")
    task = make_task(owner, requires_job_approval=True)
    register_shard(north, task)
    register_shard(south, task)
    submission = upload_model(vendor, task)
    jobs = {j.site.name: j for j in submission.jobs.all()}
    assert {j.status for j in jobs.values()} == {"awaiting_approval"}
    client = web(owner)
    page = client.get("/manage/approvals/").content.decode()
    assert f'data-job="{jobs["north"].id}"' in page
    client.post(f"/manage/approvals/jobs/{jobs['north'].id}/approve/")
    # A rejection without a reason is refused: the vendor is owed one.
    response = client.post(f"/manage/approvals/jobs/{jobs['south'].id}/reject/", follow=True)
    assert "Give the vendor a reason" in response.content.decode()
    assert Job.objects.get(id=jobs["south"].id).status == "awaiting_approval"
    client.post(f"/manage/approvals/jobs/{jobs['south'].id}/reject/", {"reason": "Model too large for our site"})
    assert Job.objects.get(id=jobs["north"].id).status == "queued"
    assert Job.objects.get(id=jobs["south"].id).status == "rejected"


def test_another_owner_cannot_decide(owner, other_owner, vendor, web):
    task = make_task(owner, visibility="invite_only", requires_job_approval=True)
    task_access_request(task=task, vendor=vendor.organization, actor=vendor.user)
    response = web(other_owner).post(
        f"/manage/approvals/tasks/{task.id}/vendors/{vendor.organization.id}/approve/"
    )
    assert response.status_code == 404
    assert "Acme Models" not in web(other_owner).get("/manage/approvals/").content.decode()


@pytest.fixture
def ledger(owner, other_owner, vendor, second_vendor):
    north, south = make_site(owner, "north"), make_site(owner, "south")
    task = make_task(owner)
    register_shard(north, task)
    register_shard(south, task)
    for persona in (vendor, second_vendor):
        submission = upload_model(persona, task, name=f"{persona.organization.name} model")
        score(north, submission, {"roc_auc": 0.9, "accuracy": 0.8})
        score(south, submission, {"roc_auc": 0.7, "accuracy": 0.6})
    foreign = make_site(other_owner, "elsewhere")
    foreign_task = make_task(other_owner, title="Foreign task")
    register_shard(foreign, foreign_task)
    score(foreign, upload_model(vendor, foreign_task), {"roc_auc": 0.5, "accuracy": 0.5})
    return {"north": north.site, "south": south.site, "task": task}


def test_ledger_lists_releases_of_my_sites_only(ledger, owner, web):
    page = web(owner).get("/manage/ledger/").content.decode()
    assert page.count("data-ledger-row") == 4
    assert "4 releases" in page and "Foreign task" not in page


def test_ledger_filters_by_site_vendor_kind_and_date(ledger, owner, vendor, web):
    client = web(owner)
    page = client.get(f"/manage/ledger/?site={ledger['north'].id}").content.decode()
    assert page.count("data-ledger-row") == 2
    page = client.get(f"/manage/ledger/?vendor={vendor.organization.id}&kind=metrics").content.decode()
    assert page.count("data-ledger-row") == 2
    page = client.get("/manage/ledger/?since=2000-01-01&until=2000-01-02").content.decode()
    assert page.count("data-ledger-row") == 0


def test_ledger_exports_the_filtered_rows_as_csv(ledger, owner, web):
    response = web(owner).get(f"/manage/ledger.csv?site={ledger['south'].id}")
    assert response["Content-Type"] == "text/csv"
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 2 and {r["site"] for r in rows} == {"south"}
    assert {r["kind"] for r in rows} == {"metrics"} and all(len(r["sha256"]) == 64 for r in rows)


def test_another_owner_sees_none_of_my_ledger(ledger, other_owner, web):
    response = web(other_owner).get(f"/manage/ledger.csv?site={ledger['north'].id}")
    assert len(list(csv.DictReader(io.StringIO(response.content.decode())))) == 0
