from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from marketplace.accounts.models import Organization
from marketplace.audit.services import audit_record
from marketplace.catalog.models import Task, TaskStatus
from marketplace.core.errors import Conflict, DomainError, PayloadTooLarge, QuotaExceeded
from marketplace.submissions.artifact_checks import artifact_check_format, sha256_of
from marketplace.submissions.models import Submission, SubmissionStatus
from marketplace.submissions.selectors import quota_usage


def _check_quota(*, task: Task, vendor: Organization) -> None:
    usage = quota_usage(task=task, vendor_id=vendor.id)
    if usage["remaining_today"] == 0:
        raise QuotaExceeded(f"Daily quota of {task.quota_per_day} submissions reached for this task.")
    if usage["remaining_total"] == 0:
        raise QuotaExceeded(f"Total quota of {task.quota_total} submissions reached for this task.")


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
    # Serialize this vendor's uploads so that concurrent requests cannot overrun the quota.
    Organization.objects.select_for_update().filter(id=vendor.id).first()
    _check_quota(task=task, vendor=vendor)
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
            submission.save(update_fields=["status", "status_reason", "updated_at"])
            audit_record(action="submission.rejected", obj=submission, data={"reason": "artifact_corrupted"})
            return submission
    jobs_create_for_submission(submission=submission)
    return submission
