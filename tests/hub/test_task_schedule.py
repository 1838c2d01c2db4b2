"""Task dates mean something: uploads only inside [opens_at, closes_at), dates validated (no
closing in the past, closing after opening) in the API and the portal form, and Celery beat opens
and closes tasks on schedule."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from marketplace.budgets.models import PrivacyCharge
from marketplace.catalog.models import Task, TaskStatus
from marketplace.catalog.services import task_create, task_open
from marketplace.catalog.tasks import tasks_schedule_task
from marketplace.submissions.models import Submission
from tests.conftest import TASK_SPEC, make_task, register_shard, upload
from tests.portal.test_owner_pages import FULL_FORM

pytestmark = pytest.mark.django_db


def _draft(owner, **dates):
    return task_create(organization=owner.organization, actor=owner.user, spec={**TASK_SPEC, **dates})


def test_uploads_before_opens_at_are_refused_with_the_opening_time(owner, vendor, site):
    task = make_task(owner, opens_at=timezone.now() + timedelta(days=2))
    register_shard(site, task)
    response = upload(vendor, task)
    assert response.status_code == 409 and response.json()["error"]["code"] == "task_not_open_yet"
    assert "opens for submissions at" in response.json()["error"]["message"]
    assert not Submission.objects.exists() and not PrivacyCharge.objects.exists()


def test_uploads_after_closes_at_are_refused_even_before_beat_closes_the_task(owner, vendor, site):
    task = make_task(owner, closes_at=timezone.now() + timedelta(days=1))
    register_shard(site, task)
    assert upload(vendor, task, name="in time").status_code == 201
    Task.objects.filter(id=task.id).update(closes_at=timezone.now() - timedelta(seconds=1))  # time passes
    response = upload(vendor, task, name="too late")
    assert response.status_code == 409 and response.json()["error"]["code"] == "task_closed"
    assert list(Submission.objects.values_list("name", flat=True)) == ["in time"]


@pytest.mark.parametrize(
    ("dates", "message"),
    [
        ({"closes_at": "2001-01-01T00:00:00Z"}, "closes_at must be in the future"),
        ({"opens_at": "2031-02-01T00:00:00Z", "closes_at": "2031-01-01T00:00:00Z"}, "closes_at must be after opens_at"),
    ],
)
def test_the_api_refuses_dates_that_cannot_work(owner, dates, message):
    response = owner.client.post("/api/v1/tasks", {**TASK_SPEC, **dates}, format="json")
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    task = _draft(owner)
    response = owner.client.patch(f"/api/v1/tasks/{task.id}", dates, format="json")
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    assert not Task.objects.exclude(id=task.id).exists()


def test_the_portal_form_refuses_a_closing_date_in_the_past(owner):
    web = Client()
    web.force_login(owner.user)
    response = web.post("/manage/tasks/new/", {**FULL_FORM, "closes_at": "2001-01-31T12:00"})
    assert response.status_code == 400 and "closes_at must be in the future" in response.content.decode()
    assert not Task.objects.exists()


def test_a_task_whose_closing_date_has_passed_cannot_be_opened(owner):
    task = _draft(owner, closes_at=timezone.now() + timedelta(hours=1))
    Task.objects.filter(id=task.id).update(closes_at=timezone.now() - timedelta(hours=1))
    response = owner.client.post(f"/api/v1/tasks/{task.id}/open")
    assert response.status_code == 409 and response.json()["error"]["code"] == "closes_at_past"


def test_beat_opens_and_closes_tasks_on_schedule(owner):
    now = timezone.now()
    due = _draft(owner, opens_at=now + timedelta(hours=1))
    later = _draft(owner, opens_at=now + timedelta(days=3))
    ending = task_open(task=_draft(owner, closes_at=now + timedelta(hours=1)), actor=owner.user)
    running = task_open(task=_draft(owner, closes_at=now + timedelta(days=3)), actor=owner.user)
    Task.objects.filter(id__in=[due.id, ending.id]).update(  # an hour and a minute pass for these two
        opens_at=now - timedelta(minutes=1)
    )
    Task.objects.filter(id=ending.id).update(closes_at=now - timedelta(minutes=1))
    result = tasks_schedule_task.delay().get()
    assert result == {"opened": [due.id], "closed": [ending.id]}
    status = dict(Task.objects.values_list("id", "status"))
    assert status == {due.id: TaskStatus.OPEN, later.id: TaskStatus.DRAFT, ending.id: TaskStatus.CLOSED,
                      running.id: TaskStatus.OPEN}  # fmt: skip
    assert tasks_schedule_task.delay().get() == {"opened": [], "closed": []}  # idempotent
    entry = settings.CELERY_BEAT_SCHEDULE["task-schedule"]
    assert entry["task"] == tasks_schedule_task.name and entry["schedule"] <= timedelta(minutes=1)
