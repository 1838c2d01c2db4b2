"""Permission funnels for tasks: fetch and authorize in one call; missing and forbidden look alike."""

from marketplace.accounts.access import access_acting_organization
from marketplace.accounts.models import Organization, OrganizationKind
from marketplace.catalog.models import Task
from marketplace.catalog.selectors import (
    leaderboard_visible,
    task_list_visible_to,
    vendor_may_submit,
)
from marketplace.core.errors import Forbidden, NotFound


def access_task_by_id(user, task_id: int) -> Task:
    """A task this person (or visitor) may see."""
    task = task_list_visible_to(user=user).filter(id=task_id).first()
    if task is None:
        raise NotFound("Task not found.")
    return task


def access_task_for_owner(user, task_id: int, *, for_update: bool = False) -> Task:
    """A task of one of the person's data-owner organizations."""
    if not getattr(user, "is_authenticated", False):
        raise NotFound("Task not found.")
    queryset = Task.objects.filter(
        id=task_id,
        organization__memberships__user=user,
        organization__kind=OrganizationKind.DATA_OWNER,
    )
    if for_update:
        queryset = queryset.select_for_update(of=("self",))
    task = queryset.first()
    if task is None:
        raise NotFound("Task not found.")
    return task


def access_task_for_leaderboard(user, task_id: int) -> Task:
    task = access_task_by_id(user, task_id)
    if not leaderboard_visible(task=task, user=user):
        raise NotFound("Task not found.")
    return task


def access_task_for_vendor(user, task_id: int, *, organization_id: int | None = None) -> tuple[Task, Organization]:
    """A task the person's vendor organization may submit to (public, or invite-only and approved)."""
    vendor = access_acting_organization(user, kind=OrganizationKind.VENDOR, organization_id=organization_id)
    task = access_task_by_id(user, task_id)
    if not vendor_may_submit(task=task, vendor=vendor):
        raise Forbidden("This task is invite-only: request access first.", code="access_required")
    return task, vendor
