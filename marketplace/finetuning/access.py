"""Permission funnels for fine-tuning runs: fetch and authorize in one call; missing and
"not yours" both answer 404. Sites reach runs only through ``rounds.run_for_site``."""

from marketplace.accounts.models import OrganizationKind
from marketplace.accounts.selectors import organizations_of
from marketplace.core.errors import NotFound
from marketplace.finetuning.models import FineTuningRun
from marketplace.finetuning.selectors import run_list_visible_to
from marketplace.submissions.models import Submission


def access_run_by_id(user, run_id: int) -> FineTuningRun:
    """A run the person may read: its vendor's members, or the task owner's."""
    run = run_list_visible_to(user=user).filter(id=run_id).first()
    if run is None:
        raise NotFound("Run not found.")
    return run


def access_run_for_owner(user, run_id: int) -> FineTuningRun:
    """A run on one of the person's data-owner organizations' tasks (approve, reject)."""
    owner_ids = (
        organizations_of(user=user).filter(kind=OrganizationKind.DATA_OWNER).values_list("id", flat=True)
    )
    run = FineTuningRun.objects.filter(id=run_id, task__organization_id__in=list(owner_ids)).first()
    if run is None:
        raise NotFound("Run not found.")
    return run


def access_run_for_vendor(user, run_id: int) -> FineTuningRun:
    """A run of one of the person's vendor organizations (the fine-tuned model download)."""
    vendor_ids = organizations_of(user=user).filter(kind=OrganizationKind.VENDOR).values_list("id", flat=True)
    run = (
        FineTuningRun.objects.filter(id=run_id, vendor_id__in=list(vendor_ids))
        .select_related("result")
        .first()
    )
    if run is None:
        raise NotFound("Run not found.")
    return run


def is_run_owner(user, run: FineTuningRun) -> bool:
    return (
        organizations_of(user=user)
        .filter(id=run.task.organization_id, kind=OrganizationKind.DATA_OWNER)
        .exists()
    )


def access_submission_for_finetuning(user, submission_id) -> Submission:
    """A submission of one of the person's vendor organizations: only its vendor may fine-tune it."""
    vendor_ids = organizations_of(user=user).filter(kind=OrganizationKind.VENDOR).values_list("id", flat=True)
    submission = Submission.objects.filter(id=submission_id, vendor_id__in=list(vendor_ids)).first()
    if submission is None:
        raise NotFound("Submission not found.")
    return submission
