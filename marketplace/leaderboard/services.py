from django.db import transaction

from marketplace.audit.services import audit_record
from marketplace.jobs.models import TERMINAL_STATUSES, JobKind, JobStatus
from marketplace.leaderboard.aggregation import weighted_metrics
from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.submissions.models import Submission, SubmissionStatus

FINAL_STATUSES = {SubmissionStatus.SCORED, SubmissionStatus.FAILED, SubmissionStatus.REJECTED}


@transaction.atomic
def leaderboard_aggregate(*, submission_id: int) -> LeaderboardEntry | None:
    """Once every site has reported, scores the submission. Safe to run any number of times.

    A submission is scored only if every site succeeded: an average over the sites that happened
    to succeed would compare models on different data.
    """
    submission = Submission.objects.select_for_update().filter(id=submission_id).first()
    if submission is None or submission.status in FINAL_STATUSES:
        return getattr(submission, "leaderboard_entry", None) if submission else None
    jobs = list(submission.jobs.filter(kind=JobKind.EVALUATE).select_related("result", "site"))
    if not jobs or any(job.status not in TERMINAL_STATUSES for job in jobs):
        return None
    failed = [job for job in jobs if job.status != JobStatus.SUCCEEDED]
    if failed:
        submission.status = SubmissionStatus.FAILED
        submission.status_reason = failed[0].failure_reason or failed[0].status
        submission.save(update_fields=["status", "status_reason", "updated_at"])
        audit_record(action="submission.failed", obj=submission, data={"reason": submission.status_reason})
        return None
    site_results = [(job.result.metrics, job.result.n_rows) for job in jobs]
    entry, _ = LeaderboardEntry.objects.update_or_create(
        submission=submission,
        defaults={
            "task": submission.task,
            "metrics": weighted_metrics(site_results),
            "per_site": [
                {"site": job.site.name, "n_rows": job.result.n_rows, "metrics": job.result.metrics} for job in jobs
            ],
            "n_rows": sum(rows for _, rows in site_results),
            "n_sites": len(jobs),
        },
    )
    submission.status = SubmissionStatus.SCORED
    submission.status_reason = ""
    submission.save(update_fields=["status", "status_reason", "updated_at"])
    audit_record(action="submission.scored", obj=submission, data={"metrics": entry.metrics})
    return entry
