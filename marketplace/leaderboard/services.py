from django.db import transaction

from marketplace.audit.services import audit_record
from marketplace.budgets.services import budget_refund
from marketplace.catalog.metric_catalog import HIGHER, metric_direction
from marketplace.catalog.models import LeaderboardMode, Task
from marketplace.jobs.models import (
    PRE_DATA_REASONS,
    TERMINAL_STATUSES,
    FailureReason,
    Job,
    JobKind,
    JobStatus,
)
from marketplace.jobs.releases import release_spec
from marketplace.leaderboard.aggregation import ladder_improves, pooled_metrics
from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.leaderboard.standings import standings_refresh
from marketplace.leaderboard.standings_add import standings_add
from marketplace.submissions.models import Submission, SubmissionStatus
from marketplace.submissions.quotas import quota_refund
from marketplace.submissions.services import submission_mark_visible

REFUNDABLE_REASONS = PRE_DATA_REASONS - {FailureReason.AGENT_LOST}
FINAL_STATUSES = {SubmissionStatus.SCORED, SubmissionStatus.FAILED, SubmissionStatus.REJECTED}


def _vendor_best(task: Task, vendor_id: int, exclude_submission_id: int) -> float | None:
    """The primary metric of the vendor's best improving entry on the task."""
    values = [
        entry.metrics[task.primary_metric]
        for entry in LeaderboardEntry.objects.filter(
            task=task, submission__vendor_id=vendor_id, ladder_improved=True
        ).exclude(submission_id=exclude_submission_id)
        if task.primary_metric in entry.metrics
    ]
    if not values:
        return None
    return max(values) if metric_direction(task.primary_metric) == HIGHER else min(values)


def _fail(submission: Submission, jobs: list[Job]) -> None:
    """A site failed before its model saw data (or the owner refused the job): no score. If no site
    released anything, the reserved privacy budget goes back."""
    failed = [job for job in jobs if job.status != JobStatus.SUCCEEDED]
    submission.status = SubmissionStatus.FAILED
    submission.status_reason = failed[0].failure_reason or failed[0].status
    update_fields = ["status", "status_reason", "results_visible_at", "updated_at"]
    # Refund only when nothing left any site and no model may have run on data: a lost agent may
    # have been brought down by the model, so its job is paid for.
    if all(job.status == JobStatus.REJECTED or job.failure_reason in REFUNDABLE_REASONS for job in jobs):
        budget_refund(submission=submission, reason=submission.status_reason)
    if not submission.task.failed_jobs_consume_quota and not submission.quota_refunded:
        quota_refund(
            task=submission.task, vendor_id=submission.vendor_id, on_day=submission.created_at.date()
        )
        submission.quota_refunded = True
        update_fields.append("quota_refunded")
    submission_mark_visible(submission=submission)
    submission.save(update_fields=update_fields)
    audit_record(action="submission.failed", obj=submission, data={"reason": submission.status_reason})


@transaction.atomic
def leaderboard_aggregate(*, submission_id: int) -> LeaderboardEntry | None:
    """Once every site has reported, scores the submission. Safe to run any number of times.

    The score is computed from the sum of the sites' released statistics over all their rows. A
    submission is scored only if every site released: a score over the sites that happened to
    succeed would compare models on different data.
    """
    submission = (
        Submission.objects.select_for_update().select_related("task").filter(id=submission_id).first()
    )
    if submission is None or submission.status in FINAL_STATUSES:
        return getattr(submission, "leaderboard_entry", None) if submission else None
    jobs = list(submission.jobs.filter(kind=JobKind.EVALUATE).select_related("result", "site").order_by("id"))
    if not jobs or any(job.status not in TERMINAL_STATUSES for job in jobs):
        return None
    if any(job.status != JobStatus.SUCCEEDED for job in jobs):
        _fail(submission, jobs)
        return None
    task = submission.task
    spec = release_spec(task)
    metrics, n_rows = pooled_metrics(spec, [(job.result.statistics, job.result.n_rows) for job in jobs])
    ladder = None
    if task.leaderboard_mode == LeaderboardMode.LADDER:
        ladder = ladder_improves(
            metric=task.primary_metric,
            value=metrics.get(task.primary_metric),
            best=_vendor_best(task, submission.vendor_id, submission.id),
            threshold=task.ladder_threshold,
        )
    entry, _ = LeaderboardEntry.objects.update_or_create(
        submission=submission,
        defaults={
            "task": task,
            "metrics": metrics,
            # Each site's metrics, computed from its own released statistics (post-processing).
            "per_site": [
                {"site": job.site.name, "n_rows": job.result.n_rows, "metrics": job.result.metrics}
                for job in jobs
            ],
            "n_rows": n_rows,
            "n_sites": len(jobs),
            "ladder_improved": ladder,
        },
    )
    submission.status = SubmissionStatus.SCORED
    submission.status_reason = ""
    submission_mark_visible(submission=submission)
    submission.save(update_fields=["status", "status_reason", "results_visible_at", "updated_at"])
    audit_record(
        action="submission.scored", obj=submission, data={"metrics": entry.metrics, "ladder": ladder}
    )
    # The ranks are stored with the score, in its transaction: a read never ranks the board. A
    # new entry is inserted into them (standings_add: a full refresh where that does not apply).
    standings_add(task_id=task.id, entry_id=entry.id)
    return entry


@transaction.atomic
def leaderboard_reveal(*, submission_id: int) -> LeaderboardEntry | None:
    """Once every site has released its private-split statistics, fills in the private score."""
    entry = LeaderboardEntry.objects.select_for_update().filter(submission_id=submission_id).first()
    if entry is None or entry.private_metrics is not None or not entry.reveal_approved:
        return entry
    jobs = list(
        Job.objects.filter(submission_id=submission_id, kind=JobKind.EVALUATE).select_related("result")
    )
    results = [job.result for job in jobs if hasattr(job, "result")]
    if not results or len(results) != len(jobs) or any(r.private_statistics is None for r in results):
        return None
    spec = release_spec(entry.task)
    entry.private_metrics, entry.private_n_rows = pooled_metrics(
        spec, [(r.private_statistics, r.private_n_rows) for r in results]
    )
    entry.save(update_fields=["private_metrics", "private_n_rows", "updated_at"])
    audit_record(action="leaderboard.revealed", obj=entry.submission, data={"metrics": entry.private_metrics})
    standings_refresh(task_id=entry.task_id)  # the board's version moves (the private board is read live)
    return entry
