from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from marketplace.accounts.selectors import organization_ids_of
from marketplace.catalog.metric_catalog import LOWER, metric_direction
from marketplace.catalog.models import LeaderboardMode, Task
from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.submissions.visibility import is_task_owner, rounded_metrics, rounded_per_site

PUBLIC = "public"
PRIVATE = "private"


def leaderboard_entries_visible_to(*, task: Task, user=None, now: datetime | None = None) -> QuerySet[LeaderboardEntry]:
    """The task's scored entries that `user` may see: all of them for the task's owner; for anyone
    else only those whose results_visible_at has passed (a score appears at its release time,
    never when the sites happen to finish)."""
    entries = LeaderboardEntry.objects.filter(task=task).select_related("submission__vendor", "submission__parent")
    if user is not None and is_task_owner(task=task, org_ids=organization_ids_of(user=user)):
        return entries
    return entries.filter(submission__results_visible_at__lte=now or timezone.now())


def _rounded(metrics: dict[str, float], decimals: dict[str, int]) -> dict[str, float]:
    return {name: round(value, decimals[name]) for name, value in metrics.items()}


def _revealed_entries(entries: list[LeaderboardEntry]) -> list[LeaderboardEntry]:
    """The private board: the finals the owner approved at close, once the sites revealed them."""
    return [e for e in entries if e.reveal_approved and e.private_metrics is not None]


def _ladder_entries(entries: list[LeaderboardEntry]) -> list[LeaderboardEntry]:
    """Ladder mode shows each vendor's current Ladder score: its latest entry that improved (the
    hub's Ladder, computed on the DP scores, marks each entry; see leaderboard.services)."""
    latest: dict[int, LeaderboardEntry] = {}
    for entry in sorted(entries, key=lambda e: (e.submission.created_at, e.submission_id)):
        if entry.ladder_improved is not False:
            latest[entry.submission.vendor_id] = entry
    return list(latest.values())


BEST = "best"
ALL = "all"
VIEWS = (BEST, ALL)

TIE_RULE = (
    "Ranked on the score as shown (rounded to the task's decimals); equal scores are tied and the "
    "earlier upload ranks first."
)


def _rank_key(metric: str, decimals: int, values_of):
    """The leaderboard's order: the metric in its own direction, on the value as shown (rounded),
    then the earlier upload, then the lower submission id (TIE_RULE). Undefined values go last."""
    sign = 1 if metric_direction(metric) == LOWER else -1

    def key(entry: LeaderboardEntry):
        value = (values_of(entry) or {}).get(metric)
        shown = None if value is None else round(float(value), decimals)
        return (shown is None, 0 if shown is None else sign * shown, entry.submission.created_at, entry.submission_id)

    return key


def _best_per_vendor(entries: list[LeaderboardEntry]) -> list[LeaderboardEntry]:
    """The first entry of each vendor in an already ranked list."""
    seen: set[int] = set()
    best = []
    for entry in entries:
        if entry.submission.vendor_id not in seen:
            seen.add(entry.submission.vendor_id)
            best.append(entry)
    return best


def leaderboard_rows(
    *, task: Task, user=None, sort_by: str | None = None, split: str = PUBLIC, now: datetime | None = None,
    view: str = BEST, search: str | None = None,
) -> list[dict]:
    """Entries `user` may see (None: a visitor) ranked by a metric in its own direction (TIE_RULE),
    values rounded per the task's decimals; per-site values for the owner, or for everyone if the
    task shows them.

    `view=best` (the default) keeps each vendor's best entry, `view=all` every scored submission.
    `search` keeps the rows whose vendor or model name contains it (case-insensitive); ranks are
    those of the whole board. `split=private` is the final board (the finals revealed at close,
    private-split scores); callers offer it only once the task has closed.
    """
    decimals = {m["name"]: m["decimals"] for m in task.metrics}
    metric = sort_by if sort_by in decimals else task.primary_metric
    owner = user is not None and is_task_owner(task=task, org_ids=organization_ids_of(user=user))
    entries = list(leaderboard_entries_visible_to(task=task, user=user, now=now))
    if split == PRIVATE:
        entries = _revealed_entries(entries)
    elif task.leaderboard_mode == LeaderboardMode.LADDER:
        entries = _ladder_entries(entries)

    def values_of(entry: LeaderboardEntry) -> dict[str, float]:
        return entry.private_metrics if split == PRIVATE else entry.metrics

    entries.sort(key=_rank_key(metric, decimals[metric], values_of))
    if view != ALL:
        entries = _best_per_vendor(entries)
    needle = (search or "").strip().casefold()
    show_per_site = (owner or task.show_per_site) and split == PUBLIC
    rows = []
    for rank, entry in enumerate(entries, start=1):
        submission = entry.submission
        if needle and needle not in submission.vendor.name.casefold() and needle not in submission.name.casefold():
            continue
        rows.append(
            {
                "rank": rank,
                "submission_id": submission.id,
                "vendor": submission.vendor.name,
                "model_name": submission.name,
                "artifact_format": submission.artifact_format,
                "model_size": submission.size,
                "is_baseline": submission.is_baseline,
                "is_final": submission.is_final,
                # A fine-tuned entry ranks on its own and names the submission it was trained from.
                "is_fine_tuned": submission.is_fine_tuned,
                "parent_submission_id": submission.parent_id,
                "parent_model_name": submission.parent.name if submission.parent_id else None,
                "submitted_at": submission.created_at,
                "metrics": rounded_metrics(task, values_of(entry)),
                "per_site": rounded_per_site(task, entry.per_site) if show_per_site else None,
                "n_rows": entry.private_n_rows if split == PRIVATE else entry.n_rows,
                "n_sites": entry.n_sites,
            }
        )
    return rows


def leaderboard_version(*, task: Task, user=None, now: datetime | None = None) -> str:
    """A short tag that changes whenever what `user` sees of the board may have changed (an entry
    added, revealed or re-scored, a submission nominated, one more entry past its release time,
    the task's settings): the ETag of the board's answers, one aggregate query."""
    import hashlib

    from django.db.models import Count, Max

    owner = user is not None and is_task_owner(task=task, org_ids=organization_ids_of(user=user))
    state = leaderboard_entries_visible_to(task=task, user=user, now=now).aggregate(
        n=Count("id"), entry=Max("updated_at"), submission=Max("submission__updated_at")
    )
    raw = f"{task.id}:{task.updated_at.isoformat()}:{task.status}:{owner}:{state['n']}:{state['entry']}:{state['submission']}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def leaderboard_best_over_time(
    *, task: Task, user=None, metric: str | None = None, now: datetime | None = None
) -> list[dict]:
    """The best score of the board after each release, in time order (rounded per the task).

    Each point is placed at the entry's release time (results_visible_at), not when the sites
    finished; in Ladder mode only entries that moved their vendor's best count.
    """
    decimals = {m["name"]: m["decimals"] for m in task.metrics}
    metric = metric if metric in decimals else task.primary_metric
    better = min if metric_direction(metric) == LOWER else max
    ladder = task.leaderboard_mode == LeaderboardMode.LADDER
    entries = [
        e for e in leaderboard_entries_visible_to(task=task, user=user, now=now)
        if not (ladder and e.ladder_improved is False)
    ]  # fmt: skip

    def released_at(entry: LeaderboardEntry):
        return entry.submission.results_visible_at or entry.created_at

    points: list[dict] = []
    best = None
    for entry in sorted(entries, key=lambda e: (released_at(e), e.id)):
        value = entry.metrics.get(metric)
        if value is None:
            continue
        best = value if best is None else better(best, value)
        points.append(
            {"at": released_at(entry), "best": round(best, decimals[metric]), "value": round(value, decimals[metric]),
             "model_name": entry.submission.name}
        )  # fmt: skip
    return points


def task_close_summary(*, task: Task) -> dict[str, int]:
    """What the owner reads before closing: the board's size and the work still in flight."""
    from django.db.models import Count, Q

    from marketplace.jobs.models import Job, JobStatus
    from marketplace.submissions.models import Submission

    submissions = Submission.objects.filter(task=task).aggregate(
        total=Count("id"), vendors=Count("vendor_id", distinct=True), scored=Count("id", filter=Q(status="scored"))
    )
    jobs = Job.objects.filter(submission__task=task).aggregate(
        awaiting=Count("id", filter=Q(status=JobStatus.AWAITING_APPROVAL)),
        running=Count("id", filter=Q(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])),
        held=Count("id", filter=Q(status=JobStatus.HELD, release_decision="")),
    )
    return {**submissions, **jobs}
