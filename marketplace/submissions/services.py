import math
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from marketplace.accounts.models import Organization
from marketplace.audit.services import audit_record
from marketplace.budgets.services import budget_refund, budget_reserve
from marketplace.catalog.models import Task, TaskStatus
from marketplace.core.errors import Conflict, DomainError, PayloadTooLarge
from marketplace.submissions.artifact_checks import artifact_check_format, sha256_of
from marketplace.submissions.models import RulesAcceptance, Submission, SubmissionStatus
from marketplace.submissions.quotas import quota_consume, quota_refund
from marketplace.submissions.selectors import rules_accepted, rules_sha256
from marketplace.submissions.visibility import results_are_visible


def submission_window_check(*, task: Task, now: datetime) -> None:
    """Uploads only between the task's opens_at and closes_at (the beat task also opens and closes
    tasks on schedule; this refuses uploads in the minute before it does)."""
    if task.opens_at and now < task.opens_at:
        raise Conflict(
            f"The task opens for submissions at {task.opens_at:%Y-%m-%d %H:%M} UTC.",
            code="task_not_open_yet", details={"opens_at": task.opens_at.isoformat()},
        )  # fmt: skip
    if task.closes_at and now >= task.closes_at:
        raise Conflict(
            f"The task closed for submissions at {task.closes_at:%Y-%m-%d %H:%M} UTC.",
            code="task_closed", details={"closes_at": task.closes_at.isoformat()},
        )  # fmt: skip


@transaction.atomic
def submission_create(
    *,
    vendor: Organization,
    task: Task,
    actor,
    name: str,
    artifact: UploadedFile,
    artifact_format: str,
    description: str = "",
    declared_sha256: str | None = None,
    is_baseline: bool = False,
) -> Submission:
    """Checks and stores an upload. Any failed check raises before a byte or a row is kept."""
    if task.status != TaskStatus.OPEN:
        raise Conflict("The task is not open for submissions.", code="task_not_open")
    submission_window_check(task=task, now=timezone.now())
    if not rules_accepted(task=task, vendor_id=vendor.id):
        raise Conflict(
            "Accept the task's rules before uploading (the task page, or POST /tasks/{id}/rules/accept).",
            code="rules_not_accepted",
        )
    max_bytes = settings.VAULTBENCH_MAX_ARTIFACT_BYTES
    if artifact.size > max_bytes:
        raise PayloadTooLarge(f"The artifact is {artifact.size} bytes; the limit is {max_bytes} bytes.")
    if artifact.size == 0:
        raise DomainError("The artifact is empty.", code="empty_artifact")
    artifact_check_format(
        artifact, artifact_format=artifact_format, max_entries=settings.VAULTBENCH_MAX_ARCHIVE_ENTRIES
    )
    sha256 = sha256_of(artifact)
    if declared_sha256 and declared_sha256.lower() != sha256:
        raise DomainError("The artifact's sha256 does not match the declared one.", code="sha256_mismatch")
    # The release's privacy cost first, then the quota: a refusal of either rolls back both.
    charge = budget_reserve(task=task, vendor_id=vendor.id)
    quota_consume(task=task, vendor_id=vendor.id)
    submission = Submission(
        vendor=vendor,
        task=task,
        created_by=actor,
        name=name,
        description=description,
        artifact_format=artifact_format,
        original_filename=(artifact.name or "artifact")[:255],
        size=artifact.size,
        sha256=sha256,
        is_baseline=is_baseline,
    )
    submission.artifact.save("artifact", artifact, save=False)
    # If the row cannot be written, the stored file must not outlive it.
    try:
        submission.save()
        charge.submission = submission
        charge.save()
        audit_record(
            action="submission.created",
            obj=submission,
            actor_user=actor,
            data={"task": task.id, "format": artifact_format, "sha256": sha256, "bytes": artifact.size},
        )
    except Exception:
        submission.artifact.delete(save=False)
        raise
    from marketplace.submissions.tasks import enqueue_submission_check

    transaction.on_commit(lambda: enqueue_submission_check(submission.id))
    return submission


@transaction.atomic
def submission_check(*, submission_id: int) -> Submission | None:
    """Re-hashes the stored artifact, then hands the submission to the sites (jobs).

    Safe to run twice: only a submission still in CHECKING moves on.
    """
    from marketplace.jobs.services import jobs_create_for_submission

    submission = Submission.objects.select_for_update().filter(id=submission_id).first()
    if submission is None or submission.status != SubmissionStatus.CHECKING:
        return submission
    with submission.artifact.open("rb") as stored:
        if sha256_of(stored) != submission.sha256:
            submission.status = SubmissionStatus.REJECTED
            submission.status_reason = "artifact_corrupted"
            # Nothing ran anywhere: the upload does not use quota.
            quota_refund(task=submission.task, vendor_id=submission.vendor_id, on_day=submission.created_at.date())
            submission.quota_refunded = True
            budget_refund(submission=submission, reason="artifact_corrupted")
            submission_mark_visible(submission=submission)
            submission.save(
                update_fields=["status", "status_reason", "quota_refunded", "results_visible_at", "updated_at"]
            )
            audit_record(action="submission.rejected", obj=submission, data={"reason": "artifact_corrupted"})
            return submission
    jobs_create_for_submission(submission=submission)
    return submission


def results_visible_at(*, created_at: datetime, now: datetime, delay_seconds: int) -> datetime:
    """When a final outcome may be shown to the vendor: created_at plus the elapsed time rounded
    up to a multiple of the task's delay (at least one), so the model's run time is not seen."""
    if delay_seconds <= 0:
        return now
    elapsed = max((now - created_at).total_seconds(), 1.0)
    return created_at + timedelta(seconds=math.ceil(elapsed / delay_seconds) * delay_seconds)


def submission_mark_visible(*, submission: Submission, now: datetime | None = None) -> None:
    """Sets results_visible_at on a submission that has just become final (the caller saves)."""
    if submission.results_visible_at is None:
        submission.results_visible_at = results_visible_at(
            created_at=submission.created_at,
            now=now or timezone.now(),
            delay_seconds=submission.task.release_delay_seconds,
        )


@transaction.atomic
def submission_nominate(*, submission: Submission, final: bool, actor) -> Submission:
    """A vendor picks (or unpicks) the submissions its private-leaderboard rank is judged on."""
    task = Task.objects.select_for_update().get(id=submission.task_id)
    submission = Submission.objects.select_for_update().get(id=submission.id)
    if task.status == TaskStatus.CLOSED:
        raise Conflict("The task has closed: final submissions are fixed.", code="task_closed")
    if final and not submission.is_final:
        # Before its release time a submission is "pending" to its vendor: the same answer
        # whether it scored or not, or the refusal itself would release the outcome early.
        if submission.status != SubmissionStatus.SCORED or not results_are_visible(submission, now=timezone.now()):
            raise Conflict("Only a scored submission can be nominated.", code="not_scored")
        chosen = Submission.objects.filter(task=task, vendor_id=submission.vendor_id, is_final=True).count()
        if chosen >= task.final_submissions:
            raise Conflict(
                f"This task takes {task.final_submissions} final submission(s): unpick one first.",
                code="too_many_finals",
            )
    if submission.is_final != final:
        submission.is_final = final
        submission.save(update_fields=["is_final", "updated_at"])
        audit_record(action="submission.nominated" if final else "submission.unnominated", obj=submission, actor_user=actor)
        # The API's rows show is_final: move the board's version so cached answers and ETags change.
        from marketplace.leaderboard.standings import standings_refresh

        standings_refresh(task_id=task.id, changed=True)
    return submission


@transaction.atomic
def rules_accept(*, task: Task, vendor: Organization, actor) -> RulesAcceptance:
    """The vendor accepts the task's rules as they read now (again after the owner changes them)."""
    if not task.rules.strip():
        raise Conflict("This task has no rules to accept.", code="no_rules")
    acceptance, created = RulesAcceptance.objects.get_or_create(
        task=task, vendor=vendor, rules_sha256=rules_sha256(task), defaults={"accepted_by": actor}
    )
    if created:
        audit_record(action="task.rules_accepted", obj=task, actor_user=actor,
                     data={"vendor": vendor.id, "rules_sha256": acceptance.rules_sha256})  # fmt: skip
    return acceptance


# --- the owner's review of jobs (approval and release), one or many at a time ----------------

REJECTION_REASON_MAX = 500


def _clean_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise DomainError("Give the vendor a reason for the rejection.", code="reason_required")
    if len(reason) > REJECTION_REASON_MAX:
        raise DomainError(
            f"The reason is {len(reason)} characters; the limit is {REJECTION_REASON_MAX}.", code="reason_too_long"
        )
    return reason


@transaction.atomic
def job_review(*, job, approve: bool, actor, reason: str = ""):
    """The owner approves a job awaiting approval, or rejects it with a reason for the vendor.

    The reason is kept on the submission (distinct reasons of several rejected jobs joined) and
    reaches the vendor with the submission's outcome, at its release time (visibility.py)."""
    from marketplace.jobs.services import job_decide

    reason = "" if approve else _clean_reason(reason)
    job = job_decide(job=job, approve=approve, actor=actor)
    if not approve:
        submission = Submission.objects.select_for_update().get(id=job.submission_id)
        reasons = [r for r in submission.rejection_reason.split("\n") if r]
        if reason not in reasons:
            joined = "\n".join([*reasons, reason])
            submission.rejection_reason = joined[:REJECTION_REASON_MAX]
            submission.save(update_fields=["rejection_reason", "updated_at"])
        audit_record(action="submission.rejection_reason", obj=submission, actor_user=actor,
                     data={"job": job.id, "reason": reason})  # fmt: skip
    return job


def jobs_review_bulk(*, jobs, approve: bool, actor, reason: str = "") -> dict[str, int]:
    """job_review over many jobs, each in its own transaction: one that moved on meanwhile (decided
    in another tab, withdrawn) is skipped and counted, not an error for the rest."""
    reason = "" if approve else _clean_reason(reason)
    done = skipped = 0
    for job in jobs:
        try:
            job_review(job=job, approve=approve, actor=actor, reason=reason)
        except Conflict:
            skipped += 1
        else:
            done += 1
    return {"done": done, "skipped": skipped}


def jobs_release_bulk(*, jobs, approve: bool, actor) -> dict[str, int]:
    """The owner's release decision on many held results (each its own transaction, as above)."""
    from marketplace.jobs.services import job_release_decide

    done = skipped = 0
    for job in jobs:
        try:
            job_release_decide(job=job, approve=approve, actor=actor)
        except Conflict:
            skipped += 1
        else:
            done += 1
    return {"done": done, "skipped": skipped}
