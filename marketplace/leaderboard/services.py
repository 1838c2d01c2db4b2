from django.db import transaction

from marketplace.audit.services import audit_record
from marketplace.jobs.models import TERMINAL_STATUSES, Job, JobKind, JobStatus
from marketplace.leaderboard.aggregation import weighted_metrics
from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.submissions.models import Submission, SubmissionStatus
from marketplace.submissions.quotas import quota_refund


def _any_improved(jobs) -> bool | None:
    flags = [job.result.ladder_improved for job in jobs if job.result.ladder_improved is not None]
    return any(flags) if flags else None


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
        update_fields = ["status", "status_reason", "updated_at"]
        if not submission.task.failed_jobs_consume_quota and not submission.quota_refunded:
            quota_refund(task=submission.task, vendor_id=submission.vendor_id, on_day=submission.created_at.date())
            submission.quota_refunded = True
            update_fields.append("quota_refunded")
        submission.save(update_fields=update_fields)
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
            "ladder_improved": _any_improved(jobs),
        },
    )
    submission.status = SubmissionStatus.SCORED
    submission.status_reason = ""
    submission.save(update_fields=["status", "status_reason", "updated_at"])
    audit_record(action="submission.scored", obj=submission, data={"metrics": entry.metrics})
    return entry


@transaction.atomic
def leaderboard_reveal(*, submission_id: int) -> LeaderboardEntry | None:
    """Once every site has released its private-split metrics, fills in the private score."""
    entry = LeaderboardEntry.objects.select_for_update().filter(submission_id=submission_id).first()
    if entry is None or entry.private_metrics is not None:
        return entry
    jobs = list(
        Job.objects.filter(submission_id=submission_id, kind=JobKind.EVALUATE).select_related("result")
    )
    results = [job.result for job in jobs if hasattr(job, "result")]
    if len(results) != len(jobs) or any(r.private_metrics is None for r in results):
        return None
    entry.private_metrics = weighted_metrics([(r.private_metrics, r.private_n_rows) for r in results])
    entry.private_n_rows = sum(r.private_n_rows for r in results)
    entry.save(update_fields=["private_metrics", "private_n_rows", "updated_at"])
    audit_record(action="leaderboard.revealed", obj=entry.submission, data={"metrics": entry.private_metrics})
    return entry
