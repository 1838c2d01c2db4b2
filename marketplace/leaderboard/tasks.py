from celery import shared_task

from marketplace.leaderboard.services import leaderboard_aggregate, leaderboard_reveal


@shared_task(name="marketplace.leaderboard.tasks.leaderboard_aggregate_task")
def leaderboard_aggregate_task(submission_id: int) -> None:
    leaderboard_aggregate(submission_id=submission_id)


@shared_task(name="marketplace.leaderboard.tasks.leaderboard_reveal_task")
def leaderboard_reveal_task(submission_id: int) -> None:
    leaderboard_reveal(submission_id=submission_id)
