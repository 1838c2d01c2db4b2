"""The leased job queue between the hub and the site agents.

Claims are atomic (a conditional UPDATE, with SELECT ... FOR UPDATE SKIP LOCKED where the
database has it), results are idempotent per job, and an expired lease puts the job back.
"""

import math
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from marketplace.audit.services import audit_record
from marketplace.catalog.models import DataShard
from marketplace.core.errors import Conflict, DomainError, NotFound
from marketplace.egress.models import EgressKind
from marketplace.egress.services import egress_receipt_verify, egress_record_create
from marketplace.jobs.models import (
    RETRYABLE_REASONS,
    TERMINAL_STATUSES,
    FailureReason,
    Job,
    JobKind,
    JobStatus,
    ReleaseDecision,
    Result,
)
from marketplace.sites.models import Site
from marketplace.submissions.models import Submission, SubmissionStatus


class LeaseLost(Conflict):
    code = "lease_lost"


def _lease_until():
    return timezone.now() + timedelta(seconds=settings.VAULTBENCH_LEASE_SECONDS)


def _enqueue_aggregation(submission_id: int) -> None:
    from marketplace.leaderboard.tasks import leaderboard_aggregate_task

    transaction.on_commit(lambda: leaderboard_aggregate_task.delay(submission_id))


def jobs_create_for_submission(*, submission: Submission) -> list[Job]:
    """One evaluation job per site holding the task's data; held for approval if the task says so."""
    shards = list(DataShard.objects.filter(task=submission.task).select_related("site").order_by("site_id"))
    if not shards:
        submission.status = SubmissionStatus.FAILED
        submission.status_reason = "no_data_sites"
        submission.save(update_fields=["status", "status_reason", "updated_at"])
        audit_record(action="submission.failed", obj=submission, data={"reason": "no_data_sites"})
        return []
    held = submission.task.requires_job_approval
    status = JobStatus.AWAITING_APPROVAL if held else JobStatus.QUEUED
    jobs = [
        Job.objects.get_or_create(
            submission=submission, site=shard.site, kind=JobKind.EVALUATE, defaults={"status": status}
        )[0]
        for shard in shards
    ]
    submission.status = SubmissionStatus.AWAITING_APPROVAL if held else SubmissionStatus.EVALUATING
    submission.save(update_fields=["status", "updated_at"])
    audit_record(
        action="submission.dispatched", obj=submission, data={"jobs": [j.id for j in jobs], "held": held}
    )
    return jobs


def job_claim(*, site: Site, agent_id: str) -> Job | None:
    """Gives the oldest queued job of this site to one agent; two agents never get the same job."""
    with transaction.atomic():
        candidates = Job.objects.filter(site=site, status=JobStatus.QUEUED).order_by("id")
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        for job_id in list(candidates.values_list("id", flat=True)[:10]):
            now = timezone.now()
            claimed = Job.objects.filter(id=job_id, status=JobStatus.QUEUED).update(
                status=JobStatus.RUNNING,
                lease_holder=agent_id,
                lease_expires_at=now + timedelta(seconds=settings.VAULTBENCH_LEASE_SECONDS),
                attempts=F("attempts") + 1,
                started_at=now,
                updated_at=now,
            )
            if claimed == 1:
                job = Job.objects.select_related("submission__task", "site").get(id=job_id)
                audit_record(
                    action="job.claimed", obj=job, actor_site=site, data={"agent": agent_id, "attempt": job.attempts}
                )
                return job
    return None


def _job_held_by(*, site: Site, job_id: int, agent_id: str, lock: bool) -> Job:
    queryset = Job.objects.filter(id=job_id, site=site)
    if lock:
        queryset = queryset.select_for_update()
    job = queryset.select_related("submission__task").first()
    if job is None:
        raise NotFound("Job not found.")
    return job


def job_renew_lease(*, site: Site, job_id: int, agent_id: str) -> Job:
    until = _lease_until()
    renewed = Job.objects.filter(
        id=job_id, site=site, status=JobStatus.RUNNING, lease_holder=agent_id
    ).update(lease_expires_at=until, updated_at=timezone.now())
    if renewed != 1:
        if not Job.objects.filter(id=job_id, site=site).exists():
            raise NotFound("Job not found.")
        raise LeaseLost("This agent no longer holds the job's lease.")
    return Job.objects.get(id=job_id)


def job_for_artifact_download(*, site: Site, job_id: int) -> Job:
    """Only a site currently running the job may fetch the vendor's artifact."""
    job = Job.objects.filter(id=job_id, site=site).select_related("submission").first()
    if job is None:
        raise NotFound("Job not found.")
    if job.status != JobStatus.RUNNING:
        raise LeaseLost("The job is not running at this site.")
    return job


def _require_reportable(job: Job, agent_id: str) -> None:
    """A running job reports through its lease holder; a job held at its site for the owner's
    release decision has no lease, and any agent of that site may report it."""
    if job.status == JobStatus.HELD:
        return
    if job.status != JobStatus.RUNNING or job.lease_holder != agent_id:
        raise LeaseLost("This agent no longer holds the job's lease.")


def _validate_metrics(job: Job, metrics: dict) -> dict[str, float]:
    expected = {m["name"] for m in job.submission.task.metrics}
    if set(metrics) != expected:
        raise DomainError(
            f"metrics must have exactly the task's metrics: {', '.join(sorted(expected))}.",
            code="invalid_metrics",
        )
    cleaned: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise DomainError(f"Metric {name!r} must be a finite number.", code="invalid_metrics")
        cleaned[name] = float(value)
    return cleaned


@transaction.atomic
def job_record_result(
    *,
    site: Site,
    job_id: int,
    agent_id: str,
    metrics: dict,
    n_rows: int,
    ledger_sha256: str,
    ledger_bytes: int,
    released: dict,
    cost_bits: float | None = None,
    ladder_improved: bool | None = None,
) -> tuple[Job, bool]:
    """Stores a site's result. Returns (job, created); a repeat of the same result changes nothing.

    `released` is the body exactly as the site sent it; its ledger receipt must match it, and the
    release is mirrored into the hub's copy of the site's egress ledger.
    """
    job = _job_held_by(site=site, job_id=job_id, agent_id=agent_id, lock=True)
    if job.status == JobStatus.SUCCEEDED:
        if job.result.ledger_sha256 == ledger_sha256:
            return job, False
        raise Conflict("A different result was already recorded for this job.", code="already_reported")
    _require_reportable(job, agent_id)
    cleaned = _validate_metrics(job, metrics)
    egress_receipt_verify(body=released, sha256=ledger_sha256, size=ledger_bytes)
    egress_record_create(
        job=job, kind=EgressKind.METRICS, sha256=ledger_sha256, size=ledger_bytes, cost_bits=cost_bits
    )
    Result.objects.create(
        job=job,
        metrics=cleaned,
        n_rows=n_rows,
        ledger_sha256=ledger_sha256,
        ledger_bytes=ledger_bytes,
        ladder_improved=ladder_improved,
    )
    job.status = JobStatus.SUCCEEDED
    job.finished_at = timezone.now()
    job.lease_expires_at = None
    job.save(update_fields=["status", "finished_at", "lease_expires_at", "updated_at"])
    audit_record(action="job.succeeded", obj=job, actor_site=site, data={"ledger_sha256": ledger_sha256})
    _enqueue_aggregation(job.submission_id)
    return job, True


@transaction.atomic
def job_record_failure(
    *, site: Site, job_id: int, agent_id: str, reason: str, released: dict | None = None,
    ledger_sha256: str | None = None, ledger_bytes: int | None = None,
) -> tuple[Job, bool]:
    """Stores a coarse failure. Site-side trouble requeues the job while attempts remain.

    A failure reason is a released value too: with a ledger receipt it is mirrored like metrics.
    """
    job = _job_held_by(site=site, job_id=job_id, agent_id=agent_id, lock=True)
    if job.status == JobStatus.FAILED:
        if job.failure_reason == reason:
            return job, False
        raise Conflict("A different outcome was already recorded for this job.", code="already_reported")
    _require_reportable(job, agent_id)
    if ledger_sha256 is not None and released is not None:
        egress_receipt_verify(body=released, sha256=ledger_sha256, size=ledger_bytes or 0)
        egress_record_create(job=job, kind=EgressKind.FAILURE, sha256=ledger_sha256, size=ledger_bytes or 0)
    retry = reason in RETRYABLE_REASONS and job.attempts < settings.VAULTBENCH_MAX_JOB_ATTEMPTS
    job.status = JobStatus.QUEUED if retry else JobStatus.FAILED
    job.failure_reason = "" if retry else reason
    job.lease_holder = ""
    job.lease_expires_at = None
    job.finished_at = None if retry else timezone.now()
    job.save(update_fields=["status", "failure_reason", "lease_holder", "lease_expires_at", "finished_at", "updated_at"])
    audit_record(
        action="job.requeued" if retry else "job.failed", obj=job, actor_site=site, data={"reason": reason}
    )
    if not retry:
        _enqueue_aggregation(job.submission_id)
    return job, True


def jobs_requeue_expired(*, now=None) -> int:
    """Puts running jobs whose lease ran out back in the queue (or fails them after max attempts).

    Safe to run concurrently: each job moves only if it is still running with the expired lease.
    """
    now = now or timezone.now()
    moved = 0
    expired = Job.objects.filter(status=JobStatus.RUNNING, lease_expires_at__lt=now)
    for job in expired.only("id", "attempts", "lease_expires_at", "submission_id"):
        give_up = job.attempts >= settings.VAULTBENCH_MAX_JOB_ATTEMPTS
        with transaction.atomic():
            changed = Job.objects.filter(
                id=job.id, status=JobStatus.RUNNING, lease_expires_at=job.lease_expires_at
            ).update(
                status=JobStatus.FAILED if give_up else JobStatus.QUEUED,
                failure_reason=FailureReason.AGENT_LOST if give_up else "",
                lease_holder="",
                lease_expires_at=None,
                finished_at=now if give_up else None,
                updated_at=now,
            )
            if changed:
                moved += 1
                audit_record(action="job.lease_expired", obj=job, data={"gave_up": give_up})
                if give_up:
                    _enqueue_aggregation(job.submission_id)
    return moved


@transaction.atomic
def job_decide(*, job: Job, approve: bool, actor) -> Job:
    """The data owner releases a held job to its site, or refuses it."""
    job = Job.objects.select_for_update().get(id=job.id)
    if job.status != JobStatus.AWAITING_APPROVAL:
        raise Conflict("Only a job awaiting approval can be approved or rejected.", code="invalid_state")
    job.status = JobStatus.QUEUED if approve else JobStatus.REJECTED
    if not approve:
        job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at", "updated_at"])
    audit_record(action="job.approved" if approve else "job.rejected", obj=job, actor_user=actor)
    submission = Submission.objects.select_for_update().get(id=job.submission_id)
    if approve and submission.status == SubmissionStatus.AWAITING_APPROVAL:
        submission.status = SubmissionStatus.EVALUATING
        submission.save(update_fields=["status", "updated_at"])
    if not approve:
        _enqueue_aggregation(job.submission_id)
    return job


def job_is_terminal(job: Job) -> bool:
    return job.status in TERMINAL_STATUSES


@transaction.atomic
def job_hold(*, site: Site, job_id: int, agent_id: str) -> Job:
    """The site keeps a computed result until the owner decides to release it (release approval)."""
    job = _job_held_by(site=site, job_id=job_id, agent_id=agent_id, lock=True)
    if job.status == JobStatus.HELD:
        return job
    if job.status != JobStatus.RUNNING or job.lease_holder != agent_id:
        raise LeaseLost("This agent no longer holds the job's lease.")
    job.status = JobStatus.HELD
    job.lease_holder = ""
    job.lease_expires_at = None
    job.save(update_fields=["status", "lease_holder", "lease_expires_at", "updated_at"])
    audit_record(action="job.held", obj=job, actor_site=site)
    return job


@transaction.atomic
def job_release_decide(*, job: Job, approve: bool, actor) -> Job:
    """The owner's release decision for a held result; the site acts on it at its next poll."""
    job = Job.objects.select_for_update().get(id=job.id)
    if job.status != JobStatus.HELD or job.release_decision:
        raise Conflict("Only a held result without a decision can be released or withheld.", code="invalid_state")
    job.release_decision = ReleaseDecision.APPROVED if approve else ReleaseDecision.REFUSED
    job.save(update_fields=["release_decision", "updated_at"])
    audit_record(action="job.release_" + job.release_decision, obj=job, actor_user=actor)
    return job


def job_release_decisions_for_site(*, site: Site) -> list[dict]:
    return [
        {"job_id": job_id, "decision": decision}
        for job_id, decision in Job.objects.filter(site=site, status=JobStatus.HELD)
        .exclude(release_decision="")
        .values_list("id", "release_decision")
    ]


def job_reveals_for_site(*, site: Site) -> list[int]:
    """Jobs whose task has closed and whose private-split metrics the site has not released yet."""
    return list(
        Job.objects.filter(
            site=site,
            status=JobStatus.SUCCEEDED,
            submission__task__status="closed",
            submission__task__public_split_fraction__lt=1.0,
            result__private_metrics__isnull=True,
        ).values_list("id", flat=True)
    )


@transaction.atomic
def job_record_private_result(
    *,
    site: Site,
    job_id: int,
    agent_id: str,
    metrics: dict,
    n_rows: int,
    ledger_sha256: str,
    ledger_bytes: int,
    released: dict,
    cost_bits: float | None = None,
) -> tuple[Job, bool]:
    """The private-split metrics, which a site releases only after the task has closed."""
    job = _job_held_by(site=site, job_id=job_id, agent_id=agent_id, lock=True)
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict("The job has no public result yet.", code="invalid_state")
    if job.submission.task.status != "closed":
        raise Conflict("Private scores are revealed only when the task closes.", code="task_not_closed")
    result = Result.objects.select_for_update().get(job=job)
    if result.private_metrics is not None:
        return job, False
    cleaned = _validate_metrics(job, metrics)
    egress_receipt_verify(body=released, sha256=ledger_sha256, size=ledger_bytes)
    egress_record_create(
        job=job, kind=EgressKind.METRICS, sha256=ledger_sha256, size=ledger_bytes, cost_bits=cost_bits
    )
    result.private_metrics = cleaned
    result.private_n_rows = n_rows
    result.save(update_fields=["private_metrics", "private_n_rows"])
    audit_record(action="job.private_result", obj=job, actor_site=site)
    from marketplace.leaderboard.tasks import leaderboard_reveal_task

    transaction.on_commit(lambda: leaderboard_reveal_task.delay(job.submission_id))
    return job, True
