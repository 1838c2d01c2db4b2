from django.db.models import QuerySet

from marketplace.accounts.selectors import organization_ids_of
from marketplace.sites.models import Site


def site_list_visible_to(*, user) -> QuerySet[Site]:
    """Sites are visible to the members of the owning organization only."""
    return Site.objects.filter(organization_id__in=organization_ids_of(user=user)).select_related(
        "organization"
    )
