"""The reconciler: finds submissions that a lost message left behind and moves them on.

Each step of a submission after a post is one Celery message sent after commit (check, score,
reveal). A message never sent (the broker was down) or never finished (the worker was killed)
leaves the submission where nothing else moves it. The sweep runs the same idempotent service
again, and audits each submission it repaired; run twice, the second run finds nothing.
"""

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from marketplace.audit.services import audit_record
from marketplace.env import env_int
from marketplace.jobs.models import TERMINAL_STATUSES, JobKind
from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.leaderboard.services import FINAL_STATUSES, leaderboard_aggregate, leaderboard_reveal
from marketplace.submissions.models import Submission, SubmissionStatus
from marketplace.submissions.services import submission_check

logger = logging.getLogger(__name__)

# Far longer than the normal path takes (a message handled in seconds): the sweep repairs what
# was lost, it does not race the message on its way. VAULTBENCH_RECONCILE_STALE_SECONDS changes it
# (the fault campaign sweeps every second).
STALE_AFTER = timedelta(minutes=2)


def _stale_after() -> timedelta:
    return timedelta(seconds=env_int("VAULTBENCH_RECONCILE_STALE_SECONDS", int(STALE_AFTER.total_seconds()), minimum=1))


def _stale_checks(cutoff: datetime) -> Iterable[int]:
    return Submission.objects.filter(status=SubmissionStatus.CHECKING, updated_at__lt=cutoff).values_list(
        "id", flat=True
    )


def _all_jobs_ended(cutoff: datetime) -> Iterable[int]:
    """Dispatched submissions whose evaluation jobs have all ended, the last of them a while ago."""
    evaluations = Q(jobs__kind=JobKind.EVALUATE)
    return (
        Submission.objects.filter(
            status__in=[SubmissionStatus.EVALUATING, SubmissionStatus.AWAITING_APPROVAL]
        )
        .annotate(
            n_jobs=Count("jobs", filter=evaluations),
            n_open=Count("jobs", filter=evaluations & ~Q(jobs__status__in=TERMINAL_STATUSES)),
            last_change=Max("jobs__updated_at", filter=evaluations),
        )
        .filter(n_jobs__gt=0, n_open=0, last_change__lt=cutoff)
        .values_list("id", flat=True)
    )


def _unrevealed(cutoff: datetime) -> Iterable[int]:
    """Approved reveals whose sites have all released their private statistics, not yet pooled."""
    missing = Q(
        submission__jobs__kind=JobKind.EVALUATE, submission__jobs__result__private_statistics__isnull=True
    )
    return (
        LeaderboardEntry.objects.filter(
            reveal_approved=True, private_metrics__isnull=True, updated_at__lt=cutoff
        )
        .annotate(n_missing=Count("submission__jobs", filter=missing))
        .filter(n_missing=0)
        .values_list("submission_id", flat=True)
    )


def _final(submission_id: int) -> bool:
    return Submission.objects.filter(id=submission_id, status__in=FINAL_STATUSES).exists()


def _revealed(submission_id: int) -> bool:
    return LeaderboardEntry.objects.filter(
        submission_id=submission_id, private_metrics__isnull=False
    ).exists()


def _checked(submission_id: int) -> bool:
    return not Submission.objects.filter(id=submission_id, status=SubmissionStatus.CHECKING).exists()


def _repair(
    ids: Iterable[int], *, repair: str, run: Callable[[int], object], done: Callable[[int], bool]
) -> int:
    repaired = 0
    for submission_id in list(ids):
        try:
            with transaction.atomic():
                run(submission_id)
                if not done(submission_id):
                    continue
                submission = Submission.objects.get(id=submission_id)
                audit_record(
                    action="submission.reconciled",
                    obj=submission,
                    data={"repair": repair, "status": submission.status},
                )
                repaired += 1
        except Exception:  # one broken submission must not stop the sweep of the others
            logger.exception("reconciler: could not repair submission %s (%s)", submission_id, repair)
    return repaired


def submissions_reconcile(*, now: datetime | None = None) -> dict[str, int]:
    """Checks uploads whose check never ran, scores submissions whose jobs have all ended, and
    pools reveals whose sites have all released. Returns how many of each it repaired."""
    cutoff = (now or timezone.now()) - _stale_after()
    return {
        "checked": _repair(
            _stale_checks(cutoff), repair="checked",
            run=lambda i: submission_check(submission_id=i), done=_checked,
        ),
        "aggregated": _repair(
            _all_jobs_ended(cutoff), repair="aggregated",
            run=lambda i: leaderboard_aggregate(submission_id=i), done=_final,
        ),
        "revealed": _repair(
            _unrevealed(cutoff), repair="revealed",
            run=lambda i: leaderboard_reveal(submission_id=i), done=_revealed,
        ),
    }  # fmt: skip
