import logging

from celery import shared_task

from marketplace.submissions.reconcile import submissions_reconcile
from marketplace.submissions.services import submission_check

logger = logging.getLogger(__name__)


@shared_task(name="marketplace.submissions.tasks.submission_check_task")
def submission_check_task(submission_id: int) -> None:
    submission_check(submission_id=submission_id)


@shared_task(name="marketplace.submissions.tasks.submissions_reconcile_task")
def submissions_reconcile_task() -> dict[str, int]:
    """The beat's sweep of submissions a lost message left behind (check, score, reveal), and
    of sites where jobs wait while no agent claims (flagged for the owner)."""
    from marketplace.sites.services import sites_flag_stuck

    repaired = submissions_reconcile()
    repaired.update({f"sites_{k}": v for k, v in sites_flag_stuck().items()})
    return repaired


def enqueue_submission_check(submission_id: int) -> None:
    """Called after commit. A broker outage must not turn a stored upload into an error:
    the reconciler picks the submission up later."""
    try:
        submission_check_task.delay(submission_id)
    except Exception:
        logger.exception("could not enqueue the check of submission %s; the reconciler will", submission_id)
