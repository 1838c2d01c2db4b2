from django.db.models import Q, QuerySet

from marketplace.accounts.selectors import organization_ids_of
from marketplace.jobs.models import Job


def job_list_visible_to(*, user) -> QuerySet[Job]:
    """Vendors see the jobs of their submissions; owners the jobs on their tasks."""
    org_ids = organization_ids_of(user=user)
    return Job.objects.filter(
        Q(submission__vendor_id__in=org_ids) | Q(submission__task__organization_id__in=org_ids)
    ).select_related("submission__task", "submission__vendor", "site", "result")
