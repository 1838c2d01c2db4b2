from celery import shared_task

from marketplace.jobs.services import jobs_requeue_expired


@shared_task(name="marketplace.jobs.tasks.jobs_requeue_expired_task")
def jobs_requeue_expired_task() -> int:
    return jobs_requeue_expired()
