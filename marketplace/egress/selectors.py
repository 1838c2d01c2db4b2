from django.db.models import QuerySet

from marketplace.accounts.models import OrganizationKind
from marketplace.accounts.selectors import organizations_of
from marketplace.egress.models import EgressRecord


def egress_records_visible_to(*, user) -> QuerySet[EgressRecord]:
    """The owner's view: every release from the sites of the user's data-owner organizations."""
    owner_ids = organizations_of(user=user).filter(kind=OrganizationKind.DATA_OWNER).values_list("id", flat=True)
    return EgressRecord.objects.filter(site__organization_id__in=list(owner_ids)).select_related(
        "site", "task", "vendor", "job"
    )
