import logging
from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from marketplace.submissions.models import Submission, SubmissionStatus
from marketplace.submissions.services import submission_check

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=2)


@shared_task(name="marketplace.submissions.tasks.submission_check_task")
def submission_check_task(submission_id: int) -> None:
    submission_check(submission_id=submission_id)


@shared_task(name="marketplace.submissions.tasks.submissions_recheck_stale_task")
def submissions_recheck_stale_task() -> int:
    """Checks uploads whose check never ran (e.g. the broker was down when they arrived)."""
    stale = Submission.objects.filter(
        status=SubmissionStatus.CHECKING, updated_at__lt=timezone.now() - STALE_AFTER
    ).values_list("id", flat=True)
    count = 0
    for submission_id in stale:
        submission_check(submission_id=submission_id)
        count += 1
    return count


def enqueue_submission_check(submission_id: int) -> None:
    """Called after commit. A broker outage must not turn a stored upload into an error:
    the periodic recheck picks the submission up later."""
    try:
        submission_check_task.delay(submission_id)
    except Exception:
        logger.exception("could not enqueue the check of submission %s; the periodic recheck will", submission_id)
