from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum

from marketplace.accounts.models import Organization, OrganizationKind
from marketplace.accounts.selectors import organization_ids_of, organizations_of
from marketplace.catalog.models import AccessEvent, AccessEventKind, Task, TaskStatus, Visibility

LISTED_STATUSES = [TaskStatus.OPEN, TaskStatus.CLOSED]


def approved_task_ids_for(*, vendor_ids: set[int]) -> set[int]:
    """Tasks whose latest access event for one of these vendors is an approval."""
    if not vendor_ids:
        return set()
    latest = AccessEvent.objects.filter(task=OuterRef("task"), vendor=OuterRef("vendor")).order_by("-id")
    rows = (
        AccessEvent.objects.filter(vendor_id__in=vendor_ids)
        .filter(id=Subquery(latest.values("id")[:1]), kind=AccessEventKind.APPROVED)
        .values_list("task_id", flat=True)
    )
    return set(rows)


def access_state(*, task: Task, vendor: Organization) -> str | None:
    """The latest access event kind for this vendor on this task, or None if it never asked."""
    event = AccessEvent.objects.filter(task=task, vendor=vendor).order_by("-id").first()
    return event.kind if event else None


def task_list_visible_to(*, user) -> QuerySet[Task]:
    """Visitors: open/closed public tasks. Vendors: also invite-only ones (to request access).
    Owners: everything of their own organizations, drafts included."""
    visible = Q(status__in=LISTED_STATUSES, visibility=Visibility.PUBLIC)
    if getattr(user, "is_authenticated", False):
        organizations = list(organizations_of(user=user))
        visible |= Q(organization_id__in=[o.id for o in organizations])
        if any(o.kind == OrganizationKind.VENDOR for o in organizations):
            visible |= Q(status__in=LISTED_STATUSES, visibility=Visibility.INVITE_ONLY)
    return (
        Task.objects.filter(visible)
        .select_related("organization")
        .annotate(site_count=Count("shards", distinct=True), total_rows=Sum("shards__row_count"))
    )


def task_is_owned_by(*, task: Task, user) -> bool:
    return task.organization_id in organization_ids_of(user=user)


def vendor_may_submit(*, task: Task, vendor: Organization) -> bool:
    if task.visibility == Visibility.PUBLIC:
        return True
    return task.id in approved_task_ids_for(vendor_ids={vendor.id})


def leaderboard_visible(*, task: Task, user) -> bool:
    """Public tasks: everyone. Invite-only: the owner and approved vendors."""
    if task_is_owned_by(task=task, user=user):
        return True
    if task.status == TaskStatus.DRAFT:
        return False
    if task.visibility == Visibility.PUBLIC:
        return True
    vendor_ids = set(organizations_of(user=user).filter(kind=OrganizationKind.VENDOR).values_list("id", flat=True))
    return task.id in approved_task_ids_for(vendor_ids=vendor_ids)


def access_events_for_task(*, task: Task) -> QuerySet[AccessEvent]:
    return AccessEvent.objects.filter(task=task).select_related("vendor", "actor")


def task_list_owned_by(*, user) -> QuerySet[Task]:
    """The tasks of the person's data-owner organizations, drafts included (the owner's desk)."""
    owner_ids = organizations_of(user=user).filter(kind=OrganizationKind.DATA_OWNER).values_list("id", flat=True)
    return (
        Task.objects.filter(organization_id__in=list(owner_ids))
        .select_related("organization")
        .annotate(site_count=Count("shards", distinct=True), total_rows=Sum("shards__row_count"))
    )


def access_requests_pending_for(*, user) -> QuerySet[AccessEvent]:
    """Open access requests on the person's own tasks: the latest event per vendor is a request."""
    owner_ids = organizations_of(user=user).filter(kind=OrganizationKind.DATA_OWNER).values_list("id", flat=True)
    latest = AccessEvent.objects.filter(task=OuterRef("task"), vendor=OuterRef("vendor")).order_by("-id")
    return (
        AccessEvent.objects.filter(task__organization_id__in=list(owner_ids), kind=AccessEventKind.REQUESTED)
        .filter(id=Subquery(latest.values("id")[:1]))
        .select_related("task", "vendor", "actor")
        .order_by("id")
    )


def shards_of_task(*, task: Task):
    from marketplace.catalog.models import DataShard

    return DataShard.objects.filter(task=task).select_related("site").order_by("site__name")


def shards_of_site(*, site):
    from marketplace.catalog.models import DataShard

    return DataShard.objects.filter(site=site).select_related("task").order_by("task__title")


def task_for_site(*, site, task_id: int) -> Task | None:
    """A task a site may hold data for: its own organization's (the owner's sites only)."""
    return Task.objects.filter(id=task_id, organization_id=site.organization_id).first()
