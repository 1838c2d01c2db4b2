from celery import shared_task

from marketplace.finetuning.rounds import runs_advance_due


@shared_task(name="marketplace.finetuning.tasks.finetuning_runs_advance_task")
def finetuning_runs_advance_task() -> int:
    """Beat: close the phases whose timeout has passed, with whoever answered."""
    return runs_advance_due()
