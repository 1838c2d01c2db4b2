"""Permission funnels for submissions: missing and "not yours" both answer NotFound."""

from marketplace.accounts.selectors import organization_ids_of
from marketplace.core.errors import NotFound
from marketplace.submissions.models import Submission
from marketplace.submissions.selectors import submission_list_visible_to


def access_submission_by_id(user, submission_id: int) -> Submission:
    """Metadata of a submission: its vendor, or the owner of its task."""
    submission = submission_list_visible_to(user=user).filter(id=submission_id).first()
    if submission is None:
        raise NotFound("Submission not found.")
    return submission


def access_submission_artifact(user, submission_id: int) -> Submission:
    """The artifact itself: only the vendor that uploaded it (owners never get vendor weights)."""
    submission = Submission.objects.filter(
        id=submission_id, vendor_id__in=organization_ids_of(user=user)
    ).first()
    if submission is None:
        raise NotFound("Submission not found.")
    return submission
