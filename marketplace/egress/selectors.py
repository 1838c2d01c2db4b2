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


def leakage_by_vendor(*, task_id: int, vendor_ids: list[int] | None = None) -> list[dict]:
    """Cumulative information released per vendor on a task: bits (Ladder/rounding bound) and
    DP epsilon, summed over every site's releases."""
    from django.db.models import Count, Sum

    records = EgressRecord.objects.filter(task_id=task_id)
    if vendor_ids is not None:
        records = records.filter(vendor_id__in=vendor_ids)
    return list(
        records.values("vendor_id", "vendor__name")
        .annotate(releases=Count("id"), cost_bits=Sum("cost_bits"), epsilon=Sum("epsilon"), bytes=Sum("bytes"))
        .order_by("vendor__name")
    )
