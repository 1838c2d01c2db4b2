from datetime import UTC, datetime

from django.db.models import Q, QuerySet
from django.utils import timezone

from marketplace.accounts.selectors import organization_ids_of
from marketplace.catalog.models import Task
from marketplace.submissions.models import QuotaCounter, RulesAcceptance, Submission


def submission_list_visible_to(*, user) -> QuerySet[Submission]:
    """Vendors see their own organization's submissions; owners see those made to their tasks."""
    org_ids = organization_ids_of(user=user)
    return Submission.objects.filter(Q(vendor_id__in=org_ids) | Q(task__organization_id__in=org_ids)).select_related(
        "vendor", "task"
    )


def quota_usage(*, task: Task, vendor_id: int, now: datetime | None = None) -> dict[str, int | None]:
    """Used and remaining submissions, read from the counters that uploads take atomically."""
    today = (now or timezone.now()).astimezone(UTC).date()
    used = dict(
        QuotaCounter.objects.filter(task=task, vendor_id=vendor_id)
        .filter(Q(day=today) | Q(day__isnull=True))
        .values_list("day", "used")
    )
    used_today, used_total = used.get(today, 0), used.get(None, 0)
    return {
        "used_today": used_today,
        "used_total": used_total,
        "remaining_today": max(task.quota_per_day - used_today, 0),
        "remaining_total": None if task.quota_total is None else max(task.quota_total - used_total, 0),
    }


def submission_list_of_vendor_user(*, user) -> QuerySet[Submission]:
    """'My submissions': those of the person's vendor organizations, with their jobs."""
    from marketplace.accounts.models import OrganizationKind
    from marketplace.accounts.selectors import organizations_of

    vendor_ids = organizations_of(user=user).filter(kind=OrganizationKind.VENDOR).values_list("id", flat=True)
    return (
        Submission.objects.filter(vendor_id__in=list(vendor_ids))
        .select_related("vendor", "task")
        .prefetch_related("jobs__site")
        .order_by("-created_at", "-id")
    )


def finals_chosen(*, task_id: int, vendor_id: int) -> int:
    """How many submissions the vendor has nominated for the task's private leaderboard."""
    return Submission.objects.filter(task_id=task_id, vendor_id=vendor_id, is_final=True).count()


def rules_sha256(task: Task) -> str:
    import hashlib

    return hashlib.sha256(task.rules.strip().encode()).hexdigest()


def rules_accepted(*, task: Task, vendor_id: int) -> bool:
    """Whether the vendor may upload as far as the rules go: the task has none, or the vendor
    accepted them as they read now."""
    if not task.rules.strip():
        return True
    return RulesAcceptance.objects.filter(task=task, vendor_id=vendor_id, rules_sha256=rules_sha256(task)).exists()
