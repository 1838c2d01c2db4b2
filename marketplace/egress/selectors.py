from django.db.models import QuerySet

from marketplace.accounts.models import OrganizationKind
from marketplace.accounts.selectors import organizations_of
from marketplace.egress.models import EgressRecord


def egress_records_visible_to(*, user) -> QuerySet[EgressRecord]:
    """The owner's view: every release from the sites of the user's data-owner organizations."""
    owner_ids = (
        organizations_of(user=user).filter(kind=OrganizationKind.DATA_OWNER).values_list("id", flat=True)
    )
    return EgressRecord.objects.filter(site__organization_id__in=list(owner_ids)).select_related(
        "site", "task", "vendor", "job"
    )


def leakage_by_vendor(
    *, task=None, task_id: int | None = None, vendor_ids: list[int] | None = None, site_records: bool = True
) -> list[dict]:
    """What each vendor has spent on a task's rows, per split: the releases mirrored from the
    sites' ledgers, and the epsilon of the sum of their rhos (zCDP composes by addition; the
    rhos are converted once, at the task's delta). Parallel sites count once per submission:
    the rhos are summed over the budgets' charges, not over the sites' records.

    ``site_records=False`` (a vendor's own view) counts the charges reserved at upload only: the
    sites' records arrive as each site finishes, which would show a vendor its jobs' progress
    and run time before the release time (docs/disclosure.md)."""
    from django.db.models import Count, Q, Sum

    from evaluator.privacy.zcdp import epsilon_for_rho
    from marketplace.budgets.models import PrivacyCharge, Split
    from marketplace.catalog.models import Task

    if task is None:
        task = Task.objects.get(id=task_id)
    records = EgressRecord.objects.filter(task=task)
    if not site_records:
        records = records.none()
    if vendor_ids is not None:
        records = records.filter(vendor_id__in=vendor_ids)
    rows = {
        row["vendor_id"]: row
        for row in records.values("vendor_id", "vendor__name")
        .annotate(releases=Count("id", filter=Q(rho__isnull=False)), bytes=Sum("bytes"))
        .order_by("vendor__name")
    }
    charges = PrivacyCharge.objects.filter(task=task, refunded=False)
    if vendor_ids is not None:
        charges = charges.filter(vendor_id__in=vendor_ids)
    spent: dict[tuple[int, str], float] = {}
    for vendor_id, vendor_name, split, rho in charges.values_list(
        "vendor_id", "vendor__name", "split", "rho"
    ):
        spent[(vendor_id, split)] = spent.get((vendor_id, split), 0.0) + rho
        row = rows.setdefault(
            vendor_id, {"vendor_id": vendor_id, "vendor__name": vendor_name, "releases": 0, "bytes": 0}
        )
        if not site_records:
            row["releases"] += 1
    out = []
    for vendor_id, row in sorted(rows.items(), key=lambda item: item[1]["vendor__name"]):
        public = spent.get((vendor_id, Split.PUBLIC), 0.0)
        private = spent.get((vendor_id, Split.PRIVATE), 0.0)
        out.append(
            {
                **row,
                "bytes": row["bytes"] or 0,
                "rho": public,
                "epsilon": epsilon_for_rho(public, task.dp_delta),
                "private_rho": private,
                "private_epsilon": epsilon_for_rho(private, task.dp_delta),
                "delta": task.dp_delta,
                "vendor_epsilon": task.dp_vendor_epsilon,
            }
        )
    return out
