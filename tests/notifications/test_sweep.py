"""What the beat sweep announces: results at their release time (never earlier), submissions
awaiting approval, stuck sites, closing tasks; once each, by e-mail and webhook."""

from datetime import timedelta

from django.utils import timezone

from marketplace.catalog.models import TaskStatus
from marketplace.jobs.models import Job, JobStatus
from marketplace.notifications.models import Event
from marketplace.notifications.services import notification_preferences_set, webhook_endpoint_create
from marketplace.notifications.sweep import notifications_sweep
from marketplace.submissions.models import Submission, SubmissionStatus
from tests.conftest import make_task, register_shard
from tests.hub.helpers import submit


def _sweep(capture):
    with capture(execute=True):
        return notifications_sweep()


def test_a_vendor_hears_of_results_at_their_release_time_not_before_and_once(
    owner, vendor, open_task, mailoutbox, django_capture_on_commit_callbacks
):
    vendor.user.email = "victor@example.org"
    vendor.user.save()
    submission = submit(vendor, open_task)
    later = timezone.now() + timedelta(hours=1)
    Submission.objects.filter(id=submission.id).update(status=SubmissionStatus.SCORED, results_visible_at=later)
    assert _sweep(django_capture_on_commit_callbacks)[Event.RESULTS_RELEASED] == 0
    assert mailoutbox == []
    Submission.objects.filter(id=submission.id).update(results_visible_at=timezone.now() - timedelta(seconds=1))
    assert _sweep(django_capture_on_commit_callbacks)[Event.RESULTS_RELEASED] == 1
    assert _sweep(django_capture_on_commit_callbacks)[Event.RESULTS_RELEASED] == 0
    (mail,) = mailoutbox
    assert mail.to == ["victor@example.org"]
    assert mail.body == (  # a link, never a score
        f"The results of your submission m1 on {open_task.title} are released.\n"
        f"http://127.0.0.1:8000/submissions/{submission.id}/"
    )


def test_an_owner_hears_of_a_submission_awaiting_approval_unless_turned_off(
    owner, vendor, site, mailoutbox, django_capture_on_commit_callbacks
):
    owner.user.email = "olivia@example.org"
    owner.user.save()
    task = make_task(owner, requires_job_approval=True)
    register_shard(site, task)
    submission = submit(vendor, task)
    assert Job.objects.filter(submission=submission, status=JobStatus.AWAITING_APPROVAL).exists()
    notification_preferences_set(user=owner.user, email_events=[])
    assert _sweep(django_capture_on_commit_callbacks)[Event.AWAITING_APPROVAL] == 1
    assert mailoutbox == []  # turned off
    second = submit(vendor, task, name="m2")
    notification_preferences_set(user=owner.user, email_events=[Event.AWAITING_APPROVAL])
    assert _sweep(django_capture_on_commit_callbacks)[Event.AWAITING_APPROVAL] == 1
    (mail,) = mailoutbox
    assert second.name in mail.subject and mail.to == ["olivia@example.org"]


def test_an_owner_hears_once_of_a_site_the_hub_flags_stuck(owner, site, mailoutbox, django_capture_on_commit_callbacks):
    owner.user.email = "olivia@example.org"
    owner.user.save()
    assert _sweep(django_capture_on_commit_callbacks)[Event.SITE_STUCK] == 0
    site.site.stuck_since = timezone.now() - timedelta(minutes=40)  # set by the reconciler's sweep
    site.site.save(update_fields=["stuck_since"])
    assert _sweep(django_capture_on_commit_callbacks)[Event.SITE_STUCK] == 1
    assert _sweep(django_capture_on_commit_callbacks)[Event.SITE_STUCK] == 0
    assert [m.to for m in mailoutbox] == [["olivia@example.org"]] and site.site.name in mailoutbox[0].subject
    assert "stuck" in mailoutbox[0].body


def test_owner_and_vendors_hear_that_a_task_closes_soon_and_that_it_closed(
    owner, vendor, open_task, mailoutbox, django_capture_on_commit_callbacks, settings
):
    owner.user.email, vendor.user.email = "olivia@example.org", "victor@example.org"
    owner.user.save()
    vendor.user.save()
    submit(vendor, open_task)
    type(open_task).objects.filter(id=open_task.id).update(closes_at=timezone.now() + timedelta(hours=3))
    assert _sweep(django_capture_on_commit_callbacks)[Event.TASK_CLOSING] == 2
    type(open_task).objects.filter(id=open_task.id).update(status=TaskStatus.CLOSED, closes_at=timezone.now())
    assert _sweep(django_capture_on_commit_callbacks)[Event.TASK_CLOSING] == 2
    assert _sweep(django_capture_on_commit_callbacks)[Event.TASK_CLOSING] == 0
    assert sorted(m.to[0] for m in mailoutbox) == ["olivia@example.org", "olivia@example.org", "victor@example.org", "victor@example.org"]


def test_the_sweep_also_delivers_webhooks(owner, vendor, site, receiver, webhooks_on_loopback, django_capture_on_commit_callbacks):
    task = make_task(owner, requires_job_approval=True)
    register_shard(site, task)
    submission = submit(vendor, task)
    webhook_endpoint_create(organization=owner.organization, actor=owner.user, url=receiver.url, events=[Event.AWAITING_APPROVAL])
    _sweep(django_capture_on_commit_callbacks)
    (request,) = receiver.requests
    assert b'"submission":%d' % submission.id in request.body
