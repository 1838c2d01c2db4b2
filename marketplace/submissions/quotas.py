"""Submission quotas per vendor and task: a daily cap and an optional total, enforced atomically."""

from datetime import UTC, date, datetime

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from marketplace.catalog.models import Task
from marketplace.core.errors import QuotaExceeded
from marketplace.submissions.models import QuotaCounter

UNLIMITED = 2**31 - 1


def _today(now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(UTC).date()


def _counter(task: Task, vendor_id: int, day: date | None) -> QuotaCounter:
    try:
        with transaction.atomic():
            return QuotaCounter.objects.get_or_create(task=task, vendor_id=vendor_id, day=day)[0]
    except IntegrityError:  # created by a concurrent upload
        return QuotaCounter.objects.get(task=task, vendor_id=vendor_id, day=day)


def _take(counter: QuotaCounter, limit: int) -> bool:
    return QuotaCounter.objects.filter(id=counter.id, used__lt=limit).update(used=F("used") + 1) == 1


def quota_consume(*, task: Task, vendor_id: int) -> None:
    """Takes one submission from today's and the total quota, or raises QuotaExceeded.

    Must run inside the upload's transaction: a refusal or a later error rolls both back.
    """
    if not _take(_counter(task, vendor_id, _today()), task.quota_per_day):
        raise QuotaExceeded(f"Daily quota of {task.quota_per_day} submissions reached for this task.")
    # The total is always counted, so that a cap set later starts from the real usage.
    total_limit = task.quota_total if task.quota_total is not None else UNLIMITED
    if not _take(_counter(task, vendor_id, None), total_limit):
        raise QuotaExceeded(f"Total quota of {task.quota_total} submissions reached for this task.")


def quota_refund(*, task: Task, vendor_id: int, on_day: date) -> None:
    """Gives a submission back (a failed job, when the owner says failures don't count)."""
    QuotaCounter.objects.filter(task=task, vendor_id=vendor_id, day=on_day, used__gt=0).update(used=F("used") - 1)
    QuotaCounter.objects.filter(task=task, vendor_id=vendor_id, day=None, used__gt=0).update(used=F("used") - 1)

