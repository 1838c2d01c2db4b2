from celery import shared_task

from marketplace.submissions.services import submission_check


@shared_task(name="marketplace.submissions.tasks.submission_check_task")
def submission_check_task(submission_id: int) -> None:
    submission_check(submission_id=submission_id)
