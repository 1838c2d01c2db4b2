from django.db.models import Q, QuerySet

from marketplace.accounts.selectors import organization_ids_of
from marketplace.jobs.models import Job


def job_list_visible_to(*, user) -> QuerySet[Job]:
    """Vendors see the jobs of their submissions; owners the jobs on their tasks."""
    org_ids = organization_ids_of(user=user)
    return Job.objects.filter(
        Q(submission__vendor_id__in=org_ids) | Q(submission__task__organization_id__in=org_ids)
    ).select_related("submission__task", "submission__vendor", "site", "result")


def jobs_awaiting_approval_for(*, user) -> QuerySet[Job]:
    """Jobs on the person's own tasks that wait for the owner's decision."""
    from marketplace.accounts.models import OrganizationKind
    from marketplace.accounts.selectors import organizations_of
    from marketplace.jobs.models import JobStatus

    owner_ids = organizations_of(user=user).filter(kind=OrganizationKind.DATA_OWNER).values_list("id", flat=True)
    return (
        Job.objects.filter(status=JobStatus.AWAITING_APPROVAL, submission__task__organization_id__in=list(owner_ids))
        .select_related("submission__task", "submission__vendor", "site")
        .order_by("id")
    )


def jobs_held_for_release_for(*, user) -> QuerySet[Job]:
    """Results held at the sites of the person's own tasks, waiting for (or acting on) a release
    decision. The values themselves stay at the site; only the job is known here."""
    from marketplace.accounts.models import OrganizationKind
    from marketplace.accounts.selectors import organizations_of
    from marketplace.jobs.models import JobStatus

    owner_ids = (
        organizations_of(user=user).filter(kind=OrganizationKind.DATA_OWNER).values_list("id", flat=True)
    )
    return (
        Job.objects.filter(status=JobStatus.HELD, submission__task__organization_id__in=list(owner_ids))
        .select_related("submission__task", "submission__vendor", "site")
        .order_by("id")
    )
