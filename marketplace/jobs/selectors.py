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


def receipts_for_site(*, site, after: int = 0, limit: int = 500) -> list[dict]:
    """The hub's mirror of one site's ledger, oldest first from ``after`` (an id): what the site
    compares its own ledger with (evaluator/ledger_reconcile.py)."""
    from marketplace.egress.models import EgressRecord

    rows = (
        EgressRecord.objects.filter(site=site, id__gt=after)
        .order_by("id")
        .values("id", "job_id", "kind", "sha256", "bytes", "task_id", "vendor_id", "rho", "epsilon", "delta")[:limit]
    )
    return list(rows)
