"""Invite-only tasks: a vendor asks, the owner decides; the log is append-only and the latest
event decides whether the vendor may submit and see the leaderboard."""

import pytest

from marketplace.audit.models import AuditEvent
from marketplace.catalog.models import AccessEvent
from marketplace.submissions.models import Submission
from tests.conftest import make_task, register_shard, upload
from tests.hub.helpers import error_code


@pytest.fixture
def invite_task(owner, site):
    task = make_task(owner, visibility="invite_only")
    register_shard(site, task)
    return task


def request_access(persona, task, note="We build screening models."):
    return persona.client.post(f"/api/v1/tasks/{task.id}/access-requests", {"note": note})


def decide(persona, task, vendor, verb):
    return persona.client.post(f"/api/v1/tasks/{task.id}/access-requests/{vendor.organization.id}/{verb}")


def test_unapproved_vendor_gets_403_on_submit_and_404_on_leaderboard(vendor, invite_task):
    response = upload(vendor, invite_task)
    assert response.status_code == 403
    assert error_code(response) == "access_required"
    assert "request access" in response.json()["error"]["message"]
    assert not Submission.objects.exists()
    assert vendor.client.get(f"/api/v1/tasks/{invite_task.id}/leaderboard").status_code == 404


def test_request_then_approval_lets_the_vendor_submit_and_see_the_leaderboard(owner, vendor, invite_task):
    response = request_access(vendor, invite_task)
    assert response.status_code == 201, response.content
    assert response.json()["kind"] == "requested" and response.json()["vendor_id"] == vendor.organization.id
    assert upload(vendor, invite_task).status_code == 403  # asked, not yet approved

    approved = decide(owner, invite_task, vendor, "approve")
    assert approved.status_code == 200 and approved.json()["kind"] == "approved"
    assert upload(vendor, invite_task).status_code == 201
    assert vendor.client.get(f"/api/v1/tasks/{invite_task.id}/leaderboard").status_code == 200
    actions = list(AuditEvent.objects.filter(object_id=str(invite_task.id)).values_list("action", flat=True))
    assert "access.requested" in actions and "access.approved" in actions


def test_rejection_after_approval_takes_access_away_and_keeps_the_log(owner, vendor, invite_task):
    request_access(vendor, invite_task)
    decide(owner, invite_task, vendor, "approve")
    rejected = decide(owner, invite_task, vendor, "reject")
    assert rejected.status_code == 200 and rejected.json()["kind"] == "rejected"
    assert upload(vendor, invite_task).status_code == 403
    assert vendor.client.get(f"/api/v1/tasks/{invite_task.id}/leaderboard").status_code == 404
    kinds = list(AccessEvent.objects.filter(task=invite_task).order_by("id").values_list("kind", flat=True))
    assert kinds == ["requested", "approved", "rejected"]


def test_rejected_vendor_may_ask_again_and_be_approved(owner, vendor, invite_task):
    request_access(vendor, invite_task)
    decide(owner, invite_task, vendor, "reject")
    assert request_access(vendor, invite_task).status_code == 201
    assert decide(owner, invite_task, vendor, "approve").status_code == 200
    assert upload(vendor, invite_task).status_code == 201
    assert AccessEvent.objects.filter(task=invite_task).count() == 4


def test_repeated_request_or_decision_is_a_conflict(owner, vendor, invite_task):
    request_access(vendor, invite_task)
    again = request_access(vendor, invite_task)
    assert again.status_code == 409 and error_code(again) == "already_requested"
    decide(owner, invite_task, vendor, "approve")
    twice = decide(owner, invite_task, vendor, "approve")
    assert twice.status_code == 409 and error_code(twice) == "already_approved"
    assert AccessEvent.objects.filter(task=invite_task).count() == 2


def test_public_task_needs_no_access_request(vendor, open_task):
    response = request_access(vendor, open_task)
    assert response.status_code == 409
    assert error_code(response) == "not_invite_only"
    assert not AccessEvent.objects.exists()


def test_approval_of_one_vendor_does_not_open_the_task_to_another(owner, vendor, second_vendor, invite_task):
    request_access(vendor, invite_task)
    decide(owner, invite_task, vendor, "approve")
    assert upload(second_vendor, invite_task).status_code == 403
    assert second_vendor.client.get(f"/api/v1/tasks/{invite_task.id}/leaderboard").status_code == 404


def test_owner_cannot_approve_a_vendor_that_never_asked(owner, vendor, invite_task):
    response = decide(owner, invite_task, vendor, "approve")
    assert response.status_code == 404
    assert not AccessEvent.objects.exists()


def test_only_the_tasks_owner_reads_and_decides_access(
    owner, other_owner, vendor, second_vendor, invite_task
):
    request_access(vendor, invite_task)
    for persona in (other_owner, vendor, second_vendor):
        assert persona.client.get(f"/api/v1/tasks/{invite_task.id}/access-requests").status_code == 404
        assert decide(persona, invite_task, vendor, "approve").status_code == 404
    assert list(AccessEvent.objects.values_list("kind", flat=True)) == ["requested"]


def test_owner_lists_the_access_log_with_constant_queries(
    owner, vendor, second_vendor, invite_task, django_assert_max_num_queries
):
    request_access(vendor, invite_task)
    request_access(second_vendor, invite_task)
    decide(owner, invite_task, vendor, "approve")
    with django_assert_max_num_queries(4):
        response = owner.client.get(f"/api/v1/tasks/{invite_task.id}/access-requests")
    rows = response.json()["results"]
    assert [(r["vendor"], r["kind"]) for r in rows] == [
        ("Acme Models", "approved"),
        ("Globex AI", "requested"),
        ("Acme Models", "requested"),
    ]
    assert rows[0]["actor"] == "olivia"


def test_owner_cannot_request_access_to_a_task(owner, other_owner, invite_task):
    response = request_access(other_owner, invite_task)
    assert response.status_code in (403, 404)
    assert not AccessEvent.objects.exists()


def test_visitor_cannot_request_access(visitor, invite_task):
    response = visitor.post(f"/api/v1/tasks/{invite_task.id}/access-requests", {})
    assert response.status_code in (401, 403)
    assert not AccessEvent.objects.exists()


def test_access_request_note_of_wrong_type_is_a_400(vendor, invite_task):
    response = vendor.client.post(
        f"/api/v1/tasks/{invite_task.id}/access-requests", {"note": {"a": 1}}, format="json"
    )
    assert response.status_code == 400
    assert error_code(response) == "invalid"
    assert not AccessEvent.objects.exists()
