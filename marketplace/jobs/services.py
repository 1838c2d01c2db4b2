"""The leased job queue between the hub and the site agents.

Claims are atomic (a conditional UPDATE, with SELECT ... FOR UPDATE SKIP LOCKED where the
database has it), results are idempotent per job, and an expired lease puts the job back.

Time: every lease instant is the database's clock plus a duration (``Now()`` in the SQL), so the
web processes that grant and renew leases and the Celery worker that expires them never compare
two machines' clocks, and nothing an agent says about time is used.
"""

import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q
from django.db.models.functions import Now
from django.utils import timezone

from marketplace.audit.services import audit_record
from marketplace.budgets.models import PrivacyCharge, Split
from marketplace.budgets.services import budget_refund
from marketplace.catalog.models import DataShard
from marketplace.core.errors import Conflict, DomainError, NotFound
from marketplace.egress.models import EgressKind
from marketplace.egress.services import LedgerMismatch, egress_receipt_verify, egress_record_create
from marketplace.env import env_int
from marketplace.jobs.models import (
    PRE_DATA_REASONS,
    RETRYABLE_REASONS,
    TERMINAL_STATUSES,
    FailureReason,
    Job,
    JobKind,
    JobStatus,
    ReleaseDecision,
    Result,
)
from marketplace.jobs.releases import InvalidRelease, release_check, runner_of
from marketplace.sites.models import Site
from marketplace.submissions.models import Submission, SubmissionStatus


class LeaseLost(Conflict):
    code = "lease_lost"


class AttemptSuperseded(Conflict):
    """A post for an attempt the hub has since given to another claim (or to nobody)."""

    code = "attempt_superseded"


ATTEMPT_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def _lease_until():
    """The database's now plus the lease: the one clock every process shares."""
    return ExpressionWrapper(
        Now() + timedelta(seconds=settings.VAULTBENCH_LEASE_SECONDS), output_field=DateTimeField()
    )


def _retry_at(attempts: int):
    """When a job requeued after its ``attempts``-th attempt failed at its site may be claimed
    again: VAULTBENCH_RETRY_DELAY_SECONDS (default 10) times the attempts so far, on the
    database's clock."""
    delay = env_int("VAULTBENCH_RETRY_DELAY_SECONDS", 10) * max(1, attempts)
    return ExpressionWrapper(Now() + timedelta(seconds=delay), output_field=DateTimeField())


def _enqueue_aggregation(submission_id: int) -> None:
    from marketplace.leaderboard.tasks import enqueue_aggregation

    transaction.on_commit(lambda: enqueue_aggregation(submission_id))


def jobs_create_for_submission(*, submission: Submission) -> list[Job]:
    """One evaluation job per site holding the task's data; held for approval if the task says so."""
    from marketplace.submissions.services import submission_mark_visible

    shards = list(DataShard.objects.filter(task=submission.task).select_related("site").order_by("site_id"))
    reserved = PrivacyCharge.objects.filter(submission=submission, split=Split.PUBLIC, refunded=False).exists()
    if not shards or not reserved:
        # Nothing runs without data, nor without its release paid for.
        reason = "no_data_sites" if not shards else "no_privacy_budget"
        submission.status = SubmissionStatus.FAILED
        submission.status_reason = reason
        budget_refund(submission=submission, reason=reason)
        submission_mark_visible(submission=submission)
        submission.save(update_fields=["status", "status_reason", "results_visible_at", "updated_at"])
        audit_record(action="submission.failed", obj=submission, data={"reason": reason})
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
        candidates = (
            Job.objects.filter(site=site, status=JobStatus.QUEUED)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=Now()))
            .order_by("id")
        )
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        for job_id in list(candidates.values_list("id", flat=True)[:10]):
            claimed = Job.objects.filter(id=job_id, status=JobStatus.QUEUED).update(
                status=JobStatus.RUNNING,
                lease_holder=agent_id,
                lease_expires_at=_lease_until(),
                attempts=F("attempts") + 1,
                attempt_token=secrets.token_hex(16),
                started_at=Now(),
                updated_at=Now(),
            )
            if claimed == 1:
                Site.objects.filter(id=site.id).update(last_claim_at=Now())
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
    ).update(lease_expires_at=until, updated_at=Now())
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


def _attempt_of(body: dict | None) -> str | None:
    attempt = body.get("attempt") if isinstance(body, dict) else None
    if attempt is None:
        return None
    if not isinstance(attempt, str) or not ATTEMPT_TOKEN.match(attempt):
        raise DomainError("attempt must be the claim's attempt token (32 hex digits).", code="invalid_attempt")
    return attempt


def _require_reportable(job: Job, agent_id: str, attempt: str | None = None) -> None:
    """A running job reports through its lease holder; a job held at its site for the owner's
    release decision has no lease, and any agent of that site may report it.

    A post naming its attempt is refused as superseded when the hub has since given the job to
    another claim; it is taken when the job's lease ran out but nobody claimed it again (the
    hub was away longer than the lease: the finished work still counts, no attempt is spent).
    """
    if job.status == JobStatus.HELD:
        return
    if attempt is not None and job.attempt_token and attempt != job.attempt_token:
        raise AttemptSuperseded("The hub gave this job to a later attempt; this one no longer counts.")
    if job.status == JobStatus.RUNNING and job.lease_holder == agent_id:
        return
    if job.status == JobStatus.QUEUED and attempt is not None and attempt == job.attempt_token:
        return
    raise LeaseLost("This agent no longer holds the job's lease.")


def _refused(*, site: Site, job_id: int, action: str, error: DomainError) -> None:
    """Audits a refused post. Runs after the refused transaction has rolled back."""
    job = Job.objects.filter(id=job_id, site=site).first()
    audit_record(
        action=action, obj=job or site, actor_site=site,
        data={"job": job_id, "code": error.code, "message": error.message[:500]},
    )  # fmt: skip


def _shard_of(job: Job) -> DataShard | None:
    return DataShard.objects.filter(task_id=job.submission.task_id, site_id=job.site_id).first()


def _verify_receipt(body: dict, ledger: dict) -> None:
    try:
        egress_receipt_verify(body=body, sha256=ledger.get("sha256"), size=ledger.get("bytes"))
    except ValueError:  # not canonical JSON (a non-finite number somewhere)
        raise LedgerMismatch("The ledger receipt does not match the released body.") from None


def _is_receipt_of(body: dict, ledger: dict) -> bool:
    try:
        _verify_receipt(body, ledger)
    except LedgerMismatch:
        return False
    return True


def job_record_result(*, site: Site, job_id: int, body: dict) -> tuple[Job, bool]:
    """Stores a site's release of a job's public split. Returns (job, created).

    ``body`` is the post exactly as the site sent it (the metrics-post contract, docs/disclosure.md);
    its ledger receipt must match it. The same body again changes nothing (created False); another
    body for a recorded job is a 409. Every refusal changes nothing and is audited.
    """
    try:
        return _record_result(site=site, job_id=job_id, body=body)
    except DomainError as error:
        _refused(site=site, job_id=job_id, action="job.result_refused", error=error)
        raise


def _ledger_of(body: dict) -> dict:
    ledger = body.get("ledger") if isinstance(body, dict) else None
    if not isinstance(ledger, dict) or not isinstance(ledger.get("sha256"), str):
        raise InvalidRelease("ledger must be an object with the release's sha256, bytes, rho, epsilon and delta.")
    if not isinstance(ledger.get("bytes"), int) or isinstance(ledger.get("bytes"), bool) or ledger["bytes"] < 0:
        raise InvalidRelease("ledger.bytes must be a non-negative integer.")
    return ledger


@transaction.atomic
def _record_result(*, site: Site, job_id: int, body: dict) -> tuple[Job, bool]:
    ledger = _ledger_of(body)
    agent_id = body.get("agent_id")
    job = _job_held_by(site=site, job_id=job_id, agent_id=agent_id, lock=True)
    if job.status == JobStatus.SUCCEEDED:
        if job.result.ledger_sha256 == ledger["sha256"] and _is_receipt_of(body, ledger):
            return job, False
        raise Conflict("A different result was already recorded for this job.", code="already_reported")
    _require_reportable(job, agent_id, _attempt_of(body))
    if job.kind != JobKind.EVALUATE:
        raise Conflict("Only an evaluation job releases statistics.", code="invalid_state")
    release = release_check(task=job.submission.task, shard=_shard_of(job), body=body, private=False)
    runner = runner_of(body)
    _verify_receipt(body, ledger)
    egress_record_create(
        job=job, kind=EgressKind.METRICS, sha256=ledger["sha256"], size=ledger["bytes"],
        rho=release.rho, epsilon=release.epsilon, delta=release.delta,
    )  # fmt: skip
    Result.objects.create(
        job=job,
        statistics=release.statistics,
        metrics=release.metrics,
        n_rows=release.n_rows,
        ledger_sha256=ledger["sha256"],
        ledger_bytes=ledger["bytes"],
        runner_image=runner["image"],
        data_fingerprint=runner["data"],
    )
    job.status = JobStatus.SUCCEEDED
    job.finished_at = timezone.now()
    job.lease_expires_at = None
    job.failure_reason = ""
    job.save(update_fields=["status", "finished_at", "lease_expires_at", "failure_reason", "updated_at"])
    audit_record(action="job.succeeded", obj=job, actor_site=site, data={"ledger_sha256": ledger["sha256"]})
    _enqueue_aggregation(job.submission_id)
    return job, True


def job_record_failure(
    *, site: Site, job_id: int, agent_id: str, reason: str, released: dict | None = None,
    ledger_sha256: str | None = None, ledger_bytes: int | None = None,
) -> tuple[Job, bool]:
    """Stores a coarse failure. Site-side trouble requeues the job while attempts remain.

    An evaluation fails only before its model has seen data (PRE_DATA_REASONS): any other reason
    is refused (and audited). A failure carries no data, so its ledger mirror has no privacy cost.
    """
    try:
        return _record_failure(
            site=site, job_id=job_id, agent_id=agent_id, reason=reason, released=released,
            ledger_sha256=ledger_sha256, ledger_bytes=ledger_bytes,
        )  # fmt: skip
    except DomainError as error:
        _refused(site=site, job_id=job_id, action="job.failure_refused", error=error)
        raise


@transaction.atomic
def _record_failure(
    *, site: Site, job_id: int, agent_id: str, reason: str, released: dict | None,
    ledger_sha256: str | None, ledger_bytes: int | None,
) -> tuple[Job, bool]:
    job = _job_held_by(site=site, job_id=job_id, agent_id=agent_id, lock=True)
    attempt = _attempt_of(released)
    if job.status == JobStatus.FAILED:
        if job.failure_reason == reason and attempt in (None, job.attempt_token):
            return job, False
        raise Conflict("A different outcome was already recorded for this job.", code="already_reported")
    _require_reportable(job, agent_id, attempt)
    if job.kind == JobKind.EVALUATE and reason not in PRE_DATA_REASONS:
        raise DomainError(
            f"An evaluation cannot fail with {reason!r} once its model has seen data: the site releases the "
            "statistics of its fallback prediction instead.",
            code="data_dependent_failure",
        )
    if ledger_sha256 is not None and released is not None:
        _verify_receipt(released, {"sha256": ledger_sha256, "bytes": ledger_bytes or 0})
        egress_record_create(job=job, kind=EgressKind.FAILURE, sha256=ledger_sha256, size=ledger_bytes or 0)
    retry = reason in RETRYABLE_REASONS and job.attempts < settings.VAULTBENCH_MAX_JOB_ATTEMPTS
    job.status = JobStatus.QUEUED if retry else JobStatus.FAILED
    job.failure_reason = "" if retry else reason
    job.lease_holder = ""
    job.lease_expires_at = None
    job.finished_at = None if retry else timezone.now()
    job.not_before = _retry_at(job.attempts) if retry else None
    job.save(update_fields=[
        "status", "failure_reason", "lease_holder", "lease_expires_at", "finished_at", "not_before", "updated_at",
    ])  # fmt: skip
    audit_record(
        action="job.requeued" if retry else "job.failed", obj=job, actor_site=site, data={"reason": reason}
    )
    if not retry:
        _enqueue_aggregation(job.submission_id)
    return job, True


def jobs_requeue_expired(*, now=None) -> int:
    """Puts running jobs whose lease ran out back in the queue (or fails them after max attempts).

    Safe to run concurrently: each job moves only if it is still running with the expired lease.
    ``now`` defaults to the database's clock (the one the leases were granted with).
    """
    now = Now() if now is None else now
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
    """Jobs whose private-split statistics the site may now release: the task has closed, the
    owner's close approved the submission's reveal (its private budget reserved), and the site
    has not released them yet."""
    return list(
        Job.objects.filter(
            site=site,
            kind=JobKind.EVALUATE,
            status=JobStatus.SUCCEEDED,
            submission__task__status="closed",
            submission__task__public_split_fraction__lt=1.0,
            submission__leaderboard_entry__reveal_approved=True,
            result__private_statistics__isnull=True,
        ).values_list("id", flat=True)
    )


def job_record_private_result(*, site: Site, job_id: int, body: dict) -> tuple[Job, bool]:
    """The private-split release of a job, which a site sends only after the close approved it.
    Same contract, checks, idempotency and auditing as job_record_result."""
    try:
        return _record_private_result(site=site, job_id=job_id, body=body)
    except DomainError as error:
        _refused(site=site, job_id=job_id, action="job.private_result_refused", error=error)
        raise


@transaction.atomic
def _record_private_result(*, site: Site, job_id: int, body: dict) -> tuple[Job, bool]:
    ledger = _ledger_of(body)
    job = _job_held_by(site=site, job_id=job_id, agent_id=body.get("agent_id"), lock=True)
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict("The job has no public result yet.", code="invalid_state")
    result = Result.objects.select_for_update().get(job=job)
    if result.private_statistics is not None:
        if result.private_ledger_sha256 == ledger["sha256"] and _is_receipt_of(body, ledger):
            return job, False
        raise Conflict("A different private result was already recorded for this job.", code="already_reported")
    task = job.submission.task
    if task.status != "closed":
        raise Conflict("Private scores are revealed only when the task closes.", code="task_not_closed")
    entry = getattr(job.submission, "leaderboard_entry", None)
    if entry is None or not entry.reveal_approved:
        raise Conflict("The owner's close did not approve revealing this submission.", code="reveal_not_approved")
    release = release_check(task=task, shard=_shard_of(job), body=body, private=True)
    _verify_receipt(body, ledger)
    egress_record_create(
        job=job, kind=EgressKind.REVEAL, sha256=ledger["sha256"], size=ledger["bytes"],
        rho=release.rho, epsilon=release.epsilon, delta=release.delta,
    )  # fmt: skip
    result.private_statistics = release.statistics
    result.private_metrics = release.metrics
    result.private_n_rows = release.n_rows
    result.private_ledger_sha256 = ledger["sha256"]
    result.save(update_fields=["private_statistics", "private_metrics", "private_n_rows", "private_ledger_sha256"])
    audit_record(action="job.private_result", obj=job, actor_site=site, data={"ledger_sha256": ledger["sha256"]})
    from marketplace.leaderboard.tasks import enqueue_reveal

    transaction.on_commit(lambda: enqueue_reveal(job.submission_id))
    return job, True
