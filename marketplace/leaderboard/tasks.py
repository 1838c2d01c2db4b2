import logging

from celery import shared_task

from marketplace.leaderboard.services import leaderboard_aggregate, leaderboard_reveal

logger = logging.getLogger(__name__)


@shared_task(name="marketplace.leaderboard.tasks.leaderboard_aggregate_task")
def leaderboard_aggregate_task(submission_id: int) -> None:
    leaderboard_aggregate(submission_id=submission_id)


@shared_task(name="marketplace.leaderboard.tasks.leaderboard_reveal_task")
def leaderboard_reveal_task(submission_id: int) -> None:
    leaderboard_reveal(submission_id=submission_id)


def enqueue_aggregation(submission_id: int) -> None:
    """Called after commit. The site's post is stored: a broker outage must not turn it into an
    error (the agent would post again for nothing); the reconciler scores the submission later."""
    try:
        leaderboard_aggregate_task.delay(submission_id)
    except Exception:
        logger.exception(
            "could not enqueue the aggregation of submission %s; the reconciler will", submission_id
        )


def enqueue_reveal(submission_id: int) -> None:
    """Called after commit; like enqueue_aggregation, for the private scores."""
    try:
        leaderboard_reveal_task.delay(submission_id)
    except Exception:
        logger.exception("could not enqueue the reveal of submission %s; the reconciler will", submission_id)
