"""The beat sweep that finds what to announce. Detection by sweep rather than by hooks in other
services, for two reasons: a vendor must hear of its results at their release time and not when
they were computed (the delay exists so that timing tells nothing, docs/disclosure.md), and a
sweep survives a lost message. Each notice is keyed, so a sweep run twice announces it once."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from marketplace.accounts.models import Membership, Organization
from marketplace.notifications.models import Event, Notice
from marketplace.notifications.services import notify

LOOKBACK = timedelta(days=2)  # a beat that was down this long still catches up; older is news no more


def _link(path: str) -> str:
    return settings.VAULTBENCH_PUBLIC_URL.rstrip("/") + path


def _announced(event: str, keys) -> set[str]:
    """Which of these keys were announced already: one query, so a sweep over many old rows does
    not try (and fail) an insert per row every minute."""
    names = {f"{event}:{key}": str(key) for key in keys}
    return {names[k] for k in Notice.objects.filter(key__in=list(names)).values_list("key", flat=True)}


def _members(organization_id: int) -> list:
    return [m.user for m in Membership.objects.filter(organization_id=organization_id).select_related("user")]


def results_released(now) -> int:
    from marketplace.submissions.models import Submission, SubmissionStatus

    rows = Submission.objects.filter(
        status__in=[SubmissionStatus.SCORED, SubmissionStatus.FAILED],
        results_visible_at__lte=now, results_visible_at__gt=now - LOOKBACK, is_baseline=False,
    ).select_related("task", "vendor")  # fmt: skip
    rows = list(rows)
    done = _announced(Event.RESULTS_RELEASED, [s.id for s in rows])
    sent = 0
    for s in rows:
        if str(s.id) in done:
            continue
        link = _link(reverse("portal:submission", args=[s.id]))
        sent += notify(
            event=Event.RESULTS_RELEASED, key=str(s.id), organization=s.vendor, users=_members(s.vendor_id),
            subject=f"Results released: {s.name} on {s.task.title}",
            text=f"The results of your submission {s.name} on {s.task.title} are released.\n{link}",
            data={"submission": s.id, "task": s.task_id, "url": link},
        )  # fmt: skip
    return sent


def awaiting_approval(now) -> int:
    from marketplace.jobs.models import Job, JobStatus
    from marketplace.submissions.models import Submission

    ids = set(Job.objects.filter(status=JobStatus.AWAITING_APPROVAL).values_list("submission_id", flat=True))
    done = {int(k) for k in _announced(Event.AWAITING_APPROVAL, ids)}
    sent = 0
    for s in Submission.objects.filter(id__in=ids - done).select_related("task__organization"):
        owner = s.task.organization
        link = _link(reverse("portal:approvals"))
        sent += notify(
            event=Event.AWAITING_APPROVAL, key=str(s.id), organization=owner, users=_members(owner.id),
            subject=f"Awaiting your approval: {s.name} on {s.task.title}",
            text=f"The submission {s.name} on {s.task.title} awaits your approval before it runs on your sites.\n{link}",
            data={"submission": s.id, "task": s.task_id, "url": link},
        )  # fmt: skip
    return sent


def sites_stuck(now) -> int:
    """Sites with a problem as the hub defines it (``Site.problem``: flagged stuck by the
    reconciler, or reporting that it cannot work); once per episode (the problem's own text)."""
    from django.db.models import Q

    from marketplace.sites.models import Site

    sent = 0
    candidates = Site.objects.filter(Q(stuck_since__isnull=False) | ~Q(health_status__in=["ok", ""]))
    for site in candidates.select_related("organization"):
        problem = site.problem
        if not problem:
            continue
        link = _link(reverse("portal:site", args=[site.id]))
        sent += notify(
            event=Event.SITE_STUCK, key=f"{site.id}:{problem}", organization=site.organization,
            users=_members(site.organization_id), subject=f"Site {site.name} is not taking jobs",
            text=f"The site {site.name} {problem}. Check that its agent runs and has what it needs.\n{link}",
            data={"site": site.id, "problem": problem, "url": link},
        )  # fmt: skip
    return sent


def tasks_closing(now) -> int:
    from marketplace.catalog.models import Task, TaskStatus
    from marketplace.submissions.models import Submission

    soon = Task.objects.filter(status=TaskStatus.OPEN, closes_at__gt=now, closes_at__lte=now + timedelta(hours=24))
    closed = Task.objects.filter(status=TaskStatus.CLOSED, closes_at__lte=now, closes_at__gt=now - LOOKBACK)
    sent = 0
    for phase, tasks in (("soon", soon), ("closed", closed)):
        for task in tasks:
            org_ids = {task.organization_id} | set(
                Submission.objects.filter(task=task).values_list("vendor_id", flat=True).distinct()
            )
            link = _link(reverse("portal:task", args=[task.id]))
            when = f"{task.closes_at:%Y-%m-%d %H:%M} UTC"
            what = f"closes on {when}" if phase == "soon" else f"closed on {when}"
            for organization in Organization.objects.filter(id__in=org_ids):
                sent += notify(
                    event=Event.TASK_CLOSING, key=f"{task.id}:{phase}:{organization.id}", organization=organization,
                    users=_members(organization.id), subject=f"{task.title} {what}",
                    text=f"The task {task.title} {what}.\n{link}",
                    data={"task": task.id, "phase": phase, "closes_at": task.closes_at.isoformat(), "url": link},
                )  # fmt: skip
    return sent


def notifications_sweep() -> dict[str, int]:
    now = timezone.now()
    return {
        Event.RESULTS_RELEASED: results_released(now),
        Event.AWAITING_APPROVAL: awaiting_approval(now),
        Event.SITE_STUCK: sites_stuck(now),
        Event.TASK_CLOSING: tasks_closing(now),
    }
