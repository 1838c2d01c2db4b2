"""Tasks: owners publish them; visitors see public ones; bad specs are clear 4xx answers."""

import io

import pytest

from marketplace.audit.models import AuditEvent
from marketplace.catalog.models import DataShard, Task, TaskStatus
from tests.conftest import TASK_SPEC, make_site, make_task, register_shard
from tests.hub.helpers import error_code, files_under


def create(persona, **overrides):
    return persona.client.post("/api/v1/tasks", {**TASK_SPEC, **overrides}, format="json")


def test_owner_creates_a_draft_task(owner):
    response = create(owner)
    assert response.status_code == 201, response.content
    task = Task.objects.get(id=response.json()["id"])
    assert task.status == TaskStatus.DRAFT and task.organization == owner.organization
    assert response.json()["metrics"][0] == {"name": "roc_auc", "direction": "higher", "decimals": 4}
    assert AuditEvent.objects.filter(
        action="task.created", object_id=str(task.id), actor_user=owner.user
    ).exists()


def test_vendor_cannot_create_a_task(vendor):
    response = create(vendor)
    assert response.status_code == 403
    assert error_code(response) == "wrong_role"
    assert not Task.objects.exists()


def test_visitor_cannot_create_a_task(visitor):
    response = visitor.post("/api/v1/tasks", TASK_SPEC, format="json")
    assert response.status_code in (401, 403)
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"input_spec": {"n_features": "thirty"}}, "input_spec"),
        ({"input_spec": [30]}, "input_spec"),
        ({"metrics": "roc_auc"}, "metrics"),
        ({"metrics": [{"name": "roc_auc", "decimals": "four"}]}, "metrics"),
        ({"metrics": [{"name": "brier_magic"}], "primary_metric": "brier_magic"}, "metrics"),
        ({"metrics": [{"name": "mean_squared_error"}], "primary_metric": "mean_squared_error"}, "metrics"),
        ({"metrics": [{"name": "roc_auc", "decimals": 99}]}, "metrics"),
        ({"primary_metric": "r2"}, "primary_metric"),
        ({"task_type": "clustering"}, "task_type"),
        ({"quota_per_day": "many"}, "quota_per_day"),
        ({"public_split_fraction": 1.5}, "public_split_fraction"),
        ({"resource_limits": {"memory_mb": 10**9}}, "resource_limits"),
        ({"resource_limits": {"gpus": 8}}, "resource_limits"),
        ({"title": ""}, "title"),
        ({"dp_epsilon_per_release": 0}, "dp_epsilon_per_release"),
        ({"dp_epsilon_per_release": -1.0}, "dp_epsilon_per_release"),
        ({"dp_delta": 0.0}, "dp_delta"),
        ({"dp_delta": 0.01}, "dp_delta"),
        ({"dp_vendor_epsilon": 0.5}, "dp_vendor_epsilon"),  # below the epsilon of one release
        ({"dp_task_epsilon": 5.0}, "dp_task_epsilon"),  # below the vendor's
        ({"release_delay_seconds": -1}, "release_delay_seconds"),
        ({"ladder_threshold": -0.1}, "ladder_threshold"),
        ({"task_type": "regression", "input_spec": {"n_features": 3}, "metrics": [{"name": "r2"}],
          "primary_metric": "r2"}, "input_spec"),  # no target_range
        ({"task_type": "regression", "input_spec": {"n_features": 3, "target_range": [5, 1]},
          "metrics": [{"name": "r2"}], "primary_metric": "r2"}, "input_spec"),
        ({"task_type": "regression", "input_spec": {"n_features": 3, "target_range": [0, "inf"]},
          "metrics": [{"name": "r2"}], "primary_metric": "r2"}, "input_spec"),
    ],
)
def test_bad_task_spec_is_a_clear_400_and_creates_nothing(owner, overrides, field):
    response = create(owner, **overrides)
    assert response.status_code == 400, response.content
    assert error_code(response) in {"invalid", "invalid_spec"}
    assert field in response.json()["error"]["details"]
    assert not Task.objects.exists()


def test_regression_metric_is_accepted_on_a_regression_task(owner):
    response = create(
        owner, task_type="regression", input_spec={"n_features": 3, "target_range": [0, 50]},
        metrics=[{"name": "mean_squared_error"}, {"name": "r2"}], primary_metric="mean_squared_error",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    assert response.json()["metrics"][0]["direction"] == "lower"
    assert response.json()["input_spec"]["target_range"] == [0.0, 50.0]


def test_privacy_settings_have_real_defaults_and_are_exposed(owner):
    body = create(owner).json()
    assert {k: body[k] for k in ("dp_epsilon_per_release", "dp_delta", "dp_vendor_epsilon", "dp_task_epsilon",
                                 "release_delay_seconds", "ladder_threshold")} == {
        "dp_epsilon_per_release": 1.0, "dp_delta": 1e-6, "dp_vendor_epsilon": 10.0, "dp_task_epsilon": 20.0,
        "release_delay_seconds": 360, "ladder_threshold": 0.01,
    }  # fmt: skip
    assert "leakage_cap_bits" not in body


def test_the_release_noise_is_frozen_once_open_but_budgets_may_grow(owner):
    task_id = create(owner).json()["id"]
    owner.client.post(f"/api/v1/tasks/{task_id}/open")
    frozen = owner.client.patch(f"/api/v1/tasks/{task_id}", {"dp_epsilon_per_release": 2.0}, format="json")
    assert frozen.status_code == 409 and error_code(frozen) == "task_frozen"
    grown = owner.client.patch(f"/api/v1/tasks/{task_id}", {"dp_vendor_epsilon": 12.0}, format="json")
    assert grown.status_code == 200 and grown.json()["dp_vendor_epsilon"] == 12.0


def test_draft_is_hidden_until_the_owner_opens_it(owner, visitor, vendor):
    task_id = create(owner).json()["id"]
    assert visitor.get(f"/api/v1/tasks/{task_id}").status_code == 404
    assert vendor.client.get(f"/api/v1/tasks/{task_id}").status_code == 404
    assert visitor.get("/api/v1/tasks").json()["results"] == []
    response = owner.client.post(f"/api/v1/tasks/{task_id}/open")
    assert response.status_code == 200 and response.json()["status"] == "open"
    assert visitor.get(f"/api/v1/tasks/{task_id}").status_code == 200
    assert [t["id"] for t in visitor.get("/api/v1/tasks").json()["results"]] == [task_id]
    assert AuditEvent.objects.filter(action="task.opened", object_id=str(task_id)).exists()


def test_owner_closes_an_open_task_once(owner):
    task = make_task(owner)
    response = owner.client.post(f"/api/v1/tasks/{task.id}/close")
    assert response.status_code == 200 and response.json()["status"] == "closed"
    again = owner.client.post(f"/api/v1/tasks/{task.id}/close")
    assert again.status_code == 409
    assert error_code(again) == "invalid_state"
    assert AuditEvent.objects.filter(action="task.closed", object_id=str(task.id)).count() == 1


def test_other_owner_cannot_open_close_or_edit_a_task(owner, other_owner, vendor):
    draft_id = create(owner).json()["id"]
    task = make_task(owner, title="Open one")
    for persona in (other_owner, vendor):
        assert persona.client.post(f"/api/v1/tasks/{draft_id}/open").status_code == 404
        assert persona.client.post(f"/api/v1/tasks/{task.id}/close").status_code == 404
        patch = persona.client.patch(f"/api/v1/tasks/{task.id}", {"title": "Mine now"}, format="json")
        assert patch.status_code == 404
    assert Task.objects.get(id=draft_id).status == TaskStatus.DRAFT
    task.refresh_from_db()
    assert task.status == TaskStatus.OPEN and task.title == "Open one"


def test_owner_edits_policy_but_not_structure_of_an_open_task(owner):
    task = make_task(owner)
    response = owner.client.patch(f"/api/v1/tasks/{task.id}", {"quota_per_day": 9}, format="json")
    assert response.status_code == 200 and response.json()["quota_per_day"] == 9
    frozen = owner.client.patch(f"/api/v1/tasks/{task.id}", {"primary_metric": "accuracy"}, format="json")
    assert frozen.status_code == 409
    assert error_code(frozen) == "task_frozen"
    task.refresh_from_db()
    assert task.quota_per_day == 9 and task.primary_metric == "roc_auc"
    assert AuditEvent.objects.filter(action="task.updated", object_id=str(task.id)).count() == 1


def test_owner_edits_structure_of_a_draft(owner):
    task_id = create(owner).json()["id"]
    response = owner.client.patch(f"/api/v1/tasks/{task_id}", {"primary_metric": "accuracy"}, format="json")
    assert response.status_code == 200
    assert Task.objects.get(id=task_id).primary_metric == "accuracy"


def test_bad_patch_is_a_clear_400_and_changes_nothing(owner):
    task = make_task(owner)
    response = owner.client.patch(f"/api/v1/tasks/{task.id}", {"min_test_rows": "lots"}, format="json")
    assert response.status_code == 400
    assert error_code(response) == "invalid"
    task.refresh_from_db()
    assert task.min_test_rows == 10


def test_visitor_sees_public_tasks_only(owner, visitor, vendor):
    public = make_task(owner, title="Public")
    invite = make_task(owner, title="Invite", visibility="invite_only")
    assert [t["id"] for t in visitor.get("/api/v1/tasks").json()["results"]] == [public.id]
    assert visitor.get(f"/api/v1/tasks/{invite.id}").status_code == 404
    # Vendors see invite-only tasks so that they can ask for access.
    assert sorted(t["id"] for t in vendor.client.get("/api/v1/tasks").json()["results"]) == sorted(
        [public.id, invite.id]
    )


def test_task_list_filters_by_type_and_search(owner, visitor):
    make_task(owner, title="Breast cancer")
    make_task(owner, title="Loan default", task_type="regression", input_spec={"n_features": 4, "target_range": [0, 1]},
              metrics=[{"name": "r2"}], primary_metric="r2")  # fmt: skip
    assert [t["title"] for t in visitor.get("/api/v1/tasks?task_type=regression").json()["results"]] == [
        "Loan default"
    ]
    assert [t["title"] for t in visitor.get("/api/v1/tasks?q=cancer").json()["results"]] == ["Breast cancer"]
    assert visitor.get("/api/v1/tasks?task_type=bogus").status_code == 400


def test_task_list_query_count_does_not_grow_with_tasks(owner, vendor, django_assert_max_num_queries):
    site = make_site(owner, "s1")
    for i in range(12):
        register_shard(site, make_task(owner, title=f"Task {i}"))
    with django_assert_max_num_queries(4):
        response = vendor.client.get("/api/v1/tasks")
    assert response.json()["count"] == 12
    assert {t["site_count"] for t in response.json()["results"]} == {1}
    assert {t["total_rows"] for t in response.json()["results"]} == {100}


def test_owner_uploads_a_public_sample_that_visitors_can_download(owner, visitor):
    task = make_task(owner)
    sample = io.BytesIO(b"f1,f2\n1,2\n")
    sample.name = "sample.csv"
    response = owner.client.put(f"/api/v1/tasks/{task.id}/sample", {"file": sample}, format="multipart")
    assert response.status_code == 200, response.content
    assert response.json()["has_sample"] is True
    download = visitor.get(f"/api/v1/tasks/{task.id}/sample")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b"f1,f2\n1,2\n"
    assert AuditEvent.objects.filter(action="task.sample_set", object_id=str(task.id)).exists()


def test_sample_over_the_cap_is_refused_and_not_kept(owner, settings):
    settings.VAULTBENCH_MAX_SAMPLE_BYTES = 10
    task = make_task(owner)
    sample = io.BytesIO(b"x" * 11)
    sample.name = "sample.csv"
    response = owner.client.put(f"/api/v1/tasks/{task.id}/sample", {"file": sample}, format="multipart")
    assert response.status_code == 413
    assert error_code(response) == "too_large"
    task.refresh_from_db()
    assert not task.sample_file
    assert files_under(settings.MEDIA_ROOT) == []


def test_other_owner_cannot_set_a_sample(owner, other_owner):
    task = make_task(owner)
    sample = io.BytesIO(b"x")
    sample.name = "s.csv"
    response = other_owner.client.put(f"/api/v1/tasks/{task.id}/sample", {"file": sample}, format="multipart")
    assert response.status_code == 404
    task.refresh_from_db()
    assert not task.sample_file


def test_task_without_sample_answers_404(owner, visitor):
    task = make_task(owner)
    assert visitor.get(f"/api/v1/tasks/{task.id}/sample").status_code == 404


def test_owner_lists_shards_other_people_cannot(
    owner, other_owner, vendor, site, open_task, django_assert_max_num_queries
):
    register_shard(make_site(owner, "site-b"), open_task, rows=300)
    with django_assert_max_num_queries(5):
        response = owner.client.get(f"/api/v1/tasks/{open_task.id}/shards")
    assert [(s["site"], s["row_count"]) for s in response.json()["results"]] == [
        ("site-a", 100),
        ("site-b", 300),
    ]
    assert other_owner.client.get(f"/api/v1/tasks/{open_task.id}/shards").status_code == 404
    assert vendor.client.get(f"/api/v1/tasks/{open_task.id}/shards").status_code == 404
    assert DataShard.objects.filter(task=open_task).count() == 2
