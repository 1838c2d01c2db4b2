"""What a person may see of a submission: the one funnel for the API, the portal and the CLI.

Every status change, failure reason, metric and per-site field of a submission is a release
(docs/disclosure.md). The task's owner sees the truth. Everyone else, the vendor that uploaded
the model included, sees a constant until the submission's `results_visible_at` (set by the hub
when the submission becomes final, padded to the task's release grid) has passed:

- status "pending" from upload until then, whatever the sites are doing: no reason, no
  timestamp but `created_at`, no jobs, no per-site anything;
- then "scored" with the pooled metrics rounded to the task's decimals (per-site values only
  where the task shows them; in Ladder mode only for a submission that moved the vendor's best),
  or "failed" with no reason;
- with that outcome (never earlier), the data owner's own reason if it rejected a job of the
  submission: text the owner wrote for the vendor before any model saw data, not a site's reason.

A submission the hub refused before any site saw it ("rejected": its artifact failed the hub's
own checks) carries no data and shows at once, with the hub's reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from evaluator.privacy.zcdp import ACCOUNTANT
from marketplace.accounts.selectors import organization_ids_of
from marketplace.budgets.selectors import budget_summary
from marketplace.catalog.models import LeaderboardMode, Task
from marketplace.core.errors import Conflict
from marketplace.submissions.models import Submission, SubmissionStatus

PENDING = "pending"

# The fields every view has, owner or not: what the vendor itself set at upload.
_UPLOAD_FIELDS = (
    "id", "task_id", "name", "description", "artifact_format", "original_filename", "size", "sha256",
    "is_baseline", "is_final", "is_fine_tuned", "parent_id", "created_at",
)  # fmt: skip


def release_time(*, created_at: datetime, delay_seconds: int, now: datetime) -> datetime:
    """The first point of the task's release grid (created_at + k * delay, k >= 1) at or after
    `now`: when a submission finishing now becomes visible. With no delay: now."""
    if delay_seconds <= 0:
        return now
    elapsed = max((now - created_at).total_seconds(), 1.0)
    return created_at + timedelta(seconds=math.ceil(elapsed / delay_seconds) * delay_seconds)


def results_are_visible(submission: Submission, *, now: datetime) -> bool:
    """Whether a non-owner may see how the submission ended (nothing before results_visible_at)."""
    return submission.results_visible_at is not None and submission.results_visible_at <= now


def status_seen_q(status: str, *, org_ids: Iterable[int], now: datetime) -> Q:
    """Submissions whose status, as `submission_view_for` shows them to a person of `org_ids`, is
    `status`: the true one on the person's own tasks, the visible one elsewhere. A filter on the
    true status would answer "scored" before the release time (docs/disclosure.md)."""
    own = Q(task__organization_id__in=list(org_ids))
    released = Q(status__in=[SubmissionStatus.SCORED, SubmissionStatus.FAILED], results_visible_at__lte=now)
    if status == PENDING:
        seen = ~released & ~Q(status=SubmissionStatus.REJECTED)
    elif status in (SubmissionStatus.SCORED, SubmissionStatus.FAILED):
        seen = released & Q(status=status)
    elif status == SubmissionStatus.REJECTED:
        seen = Q(status=status)
    else:  # checking, awaiting approval, evaluating: only an owner sees them
        seen = Q(pk__in=[])
    return (own & Q(status=status)) | (~own & seen)


def rounded_metrics(task: Task, metrics: dict | None) -> dict[str, float] | None:
    """Metric values rounded to the task's decimals; names the task does not show are dropped."""
    if metrics is None:
        return None
    decimals = {m["name"]: m["decimals"] for m in task.metrics}
    return {name: round(float(value), decimals[name]) for name, value in metrics.items() if name in decimals}


def rounded_per_site(task: Task, per_site: list[dict] | None) -> list[dict] | None:
    if per_site is None:
        return None
    return [{**site, "metrics": rounded_metrics(task, site.get("metrics") or {})} for site in per_site]


def is_task_owner(*, task: Task, org_ids: Iterable[int]) -> bool:
    return task.organization_id in set(org_ids)


def _entry_of(submission: Submission):
    return getattr(submission, "leaderboard_entry", None)  # None when the submission was never scored


def submission_view_for(
    *, user=None, submission: Submission, now: datetime | None = None, org_ids: set[int] | None = None
) -> dict:
    """The submission as `user` may see it (see the module's docstring).

    Pass `org_ids` (organization_ids_of(user=user)) when viewing many submissions, and fetch them
    with `select_related("task", "vendor", "leaderboard_entry")`.
    """
    now = now or timezone.now()
    if org_ids is None:
        org_ids = organization_ids_of(user=user) if user is not None else set()
    task = submission.task
    view = {field: getattr(submission, field) for field in _UPLOAD_FIELDS}
    view["vendor"] = submission.vendor.name
    view["release_delay_seconds"] = task.release_delay_seconds
    owner = is_task_owner(task=task, org_ids=org_ids)
    view["is_owner_view"] = owner
    entry = _entry_of(submission) if submission.status == SubmissionStatus.SCORED else None
    ladder = task.leaderboard_mode == LeaderboardMode.LADDER
    if owner:
        return {
            **view,
            "status": submission.status,
            "status_reason": submission.status_reason,
            "results_visible_at": submission.results_visible_at,
            "updated_at": submission.updated_at,
            "metrics": rounded_metrics(task, entry.metrics) if entry else None,
            "ladder_improved": entry.ladder_improved if entry and ladder else None,
            "per_site": rounded_per_site(task, entry.per_site) if entry else None,
            "pending_until": None,
            "rejection_reason": submission.rejection_reason,
        }
    hidden = {
        "status_reason": "",
        "results_visible_at": None,
        "updated_at": None,
        "metrics": None,
        "ladder_improved": None,
        "per_site": None,
        "rejection_reason": "",
    }
    if submission.status == SubmissionStatus.REJECTED:
        # Refused by the hub's own checks before any site saw the model: nothing of the data in it.
        return {**view, **hidden, "status": submission.status, "status_reason": submission.status_reason,
                "pending_until": None}  # fmt: skip
    if submission.status not in (SubmissionStatus.SCORED, SubmissionStatus.FAILED) or not results_are_visible(
        submission, now=now
    ):
        pending_until = release_time(
            created_at=submission.created_at, delay_seconds=task.release_delay_seconds, now=now
        )
        return {**view, **hidden, "status": PENDING, "pending_until": pending_until}
    visible = {**view, **hidden, "status": submission.status, "pending_until": None,
               "results_visible_at": submission.results_visible_at,
               "rejection_reason": submission.rejection_reason}  # fmt: skip
    if entry is None:
        return visible  # failed: the outcome only, never a reason
    improved = entry.ladder_improved if ladder else None
    shows_values = not ladder or improved is not False
    visible["ladder_improved"] = improved
    if shows_values:
        visible["metrics"] = rounded_metrics(task, entry.metrics)
        if task.show_per_site:
            visible["per_site"] = rounded_per_site(task, entry.per_site)
    return visible


def check_nominable(view: dict, *, action: str = "nominated") -> None:
    """A vendor acts only on what it has seen scored (nominating, fine-tuning): accepting the action
    earlier would tell it the outcome before its release time. The services check the true
    status again."""
    if view["status"] != SubmissionStatus.SCORED:
        raise Conflict(f"Only a scored submission can be {action}.", code="not_scored")


def submission_views_for(*, user, submissions: Iterable[Submission], now: datetime | None = None) -> list[dict]:
    """submission_view_for over many submissions (one query for the person's organizations)."""
    now = now or timezone.now()
    org_ids = organization_ids_of(user=user)
    return [submission_view_for(submission=s, now=now, org_ids=org_ids) for s in submissions]


MECHANISM = "Gaussian noise on sufficient statistics (zCDP)"


def privacy_budget_of(*, task: Task, vendor_id: int | None) -> dict:
    """What a vendor reads before uploading (the quota API, the task and upload pages, the CLI):
    the task's mechanism and accountant, and its budget on the public split."""
    return {"mechanism": MECHANISM, "accountant": ACCOUNTANT, **budget_summary(task=task, vendor_id=vendor_id)}
