from marketplace.accounts.selectors import organization_ids_of
from marketplace.core.errors import NotFound
from marketplace.jobs.models import Job
from marketplace.jobs.selectors import job_list_visible_to


def access_job_by_id(user, job_id: int) -> Job:
    job = job_list_visible_to(user=user).filter(id=job_id).first()
    if job is None:
        raise NotFound("Job not found.")
    return job


def access_job_for_owner(user, job_id: int) -> Job:
    """A job on one of the person's own tasks (for approval decisions)."""
    job = Job.objects.filter(
        id=job_id, submission__task__organization_id__in=organization_ids_of(user=user)
    ).first()
    if job is None:
        raise NotFound("Job not found.")
    return job
