from datetime import UTC, datetime, time

from django.db.models import Q, QuerySet
from django.utils import timezone

from marketplace.accounts.selectors import organization_ids_of
from marketplace.catalog.models import Task
from marketplace.submissions.models import Submission, SubmissionStatus

# Uploads rejected by the hub's checks never ran anywhere, so they do not use quota.
COUNTED = ~Q(status=SubmissionStatus.REJECTED)


def submission_list_visible_to(*, user) -> QuerySet[Submission]:
    """Vendors see their own organization's submissions; owners see those made to their tasks."""
    org_ids = organization_ids_of(user=user)
    return Submission.objects.filter(Q(vendor_id__in=org_ids) | Q(task__organization_id__in=org_ids)).select_related(
        "vendor", "task"
    )


def quota_usage(*, task: Task, vendor_id: int, now: datetime | None = None) -> dict[str, int | None]:
    now = now or timezone.now()
    day_start = datetime.combine(now.astimezone(UTC).date(), time.min, tzinfo=UTC)
    counted = Submission.objects.filter(COUNTED, task=task, vendor_id=vendor_id)
    used_today = counted.filter(created_at__gte=day_start).count()
    used_total = counted.count()
    remaining_today = max(task.quota_per_day - used_today, 0)
    remaining_total = None if task.quota_total is None else max(task.quota_total - used_total, 0)
    return {
        "used_today": used_today,
        "used_total": used_total,
        "remaining_today": remaining_today,
        "remaining_total": remaining_total,
    }
