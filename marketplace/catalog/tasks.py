from celery import shared_task

from marketplace.catalog.services import tasks_apply_schedule


@shared_task(name="marketplace.catalog.tasks.tasks_schedule_task")
def tasks_schedule_task() -> dict[str, list[int]]:
    """Opens and closes tasks at their opens_at / closes_at (Celery beat)."""
    return tasks_apply_schedule()
