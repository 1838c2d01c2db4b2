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


# The fields a board needs, read with values(): a board of 1,000 entries builds no model instance.
_FIELDS = {
    "id": "id", "submission_id": "submission_id", "metrics": "metrics", "private_metrics": "private_metrics",
    "per_site": "per_site", "ladder_improved": "ladder_improved", "reveal_approved": "reveal_approved",
    "n_rows": "n_rows", "private_n_rows": "private_n_rows", "n_sites": "n_sites", "entry_created_at": "created_at",
    "entry_updated_at": "updated_at", "on_public_board": "on_public_board",
    "created_at": "submission__created_at", "results_visible_at": "submission__results_visible_at",
    "vendor_id": "submission__vendor_id", "vendor": "submission__vendor__name", "model_name": "submission__name",
    "artifact_format": "submission__artifact_format", "model_size": "submission__size",
    "is_baseline": "submission__is_baseline", "is_final": "submission__is_final",
    "is_fine_tuned": "submission__is_fine_tuned", "parent_submission_id": "submission__parent_id",
    "parent_model_name": "submission__parent__name",
}  # fmt: skip


# What ranking reads (leaderboard_ranked without a search, standings' bookkeeping): no per-site
# values or private scores, the bulk of a row's JSON.
RANK_FIELDS = ("id", "submission_id", "metrics", "ladder_improved", "created_at", "vendor_id",
               "results_visible_at", "entry_updated_at", "on_public_board")  # fmt: skip


def entry_values(entries: QuerySet[LeaderboardEntry], fields: tuple[str, ...] | None = None) -> list[dict]:
    """`entries` as the plain dicts the board functions take (_FIELDS, or those `fields`), one query."""
    wanted = {k: v for k, v in _FIELDS.items() if fields is None or k in fields}
    names = {v: k for k, v in wanted.items()}
    return [{names[k]: v for k, v in row.items()} for row in entries.values(*wanted.values())]


def leaderboard_entries(
    *, task: Task, user=None, now: datetime | None = None, split: str | None = None
) -> list[dict]:
    """The entries `user` may see (leaderboard_entries_visible_to), as plain dicts, one query. Fetch
    them once per request and hand them to leaderboard_rows / leaderboard_best_over_time.
    `split=private` fetches only the revealed finals (the private board's entries)."""
    entries = leaderboard_entries_visible_to(task=task, user=user, now=now)
    if split == PRIVATE:
        entries = entries.filter(reveal_approved=True, private_metrics__isnull=False)
    return entry_values(entries)


def _revealed_entries(entries: list[dict]) -> list[dict]:
    """The private board: the finals the owner approved at close, once the sites revealed them."""
    return [e for e in entries if e["reveal_approved"] and e["private_metrics"] is not None]


def _ladder_entries(entries: list[dict]) -> list[dict]:
    """Ladder mode shows each vendor's current Ladder score: its latest entry that improved (the
    hub's Ladder, computed on the DP scores, marks each entry; see leaderboard.services)."""
    latest: dict[int, dict] = {}
    for entry in sorted(entries, key=lambda e: (e["created_at"], e["submission_id"])):
        if entry["ladder_improved"] is not False:
            latest[entry["vendor_id"]] = entry
    return list(latest.values())


BEST = "best"
ALL = "all"
VIEWS = (BEST, ALL)

TIE_RULE = (
    "Ranked on the score as shown (rounded to the task's decimals); equal scores are tied and the "
    "earlier upload ranks first."
)


def _rank_key(metric: str, decimals: int, values_key: str):
    """The leaderboard's order: the metric in its own direction, on the value as shown (rounded),
    then the earlier upload, then the lower submission id (TIE_RULE). Undefined values go last."""
    sign = 1 if metric_direction(metric) == LOWER else -1

    def key(entry: dict):
        value = (entry[values_key] or {}).get(metric)
        shown = None if value is None else round(float(value), decimals)
        return (shown is None, 0 if shown is None else sign * shown, entry["created_at"], entry["submission_id"])

    return key


def _best_per_vendor(entries: list[dict]) -> list[dict]:
    """The first entry of each vendor in an already ranked list."""
    seen: set[int] = set()
    best = []
    for entry in entries:
        if entry["vendor_id"] not in seen:
            seen.add(entry["vendor_id"])
            best.append(entry)
    return best


def leaderboard_ranked(
    *, task: Task, user=None, sort_by: str | None = None, split: str = PUBLIC, now: datetime | None = None,
    view: str = BEST, search: str | None = None, entries: list[dict] | None = None,
) -> list[dict]:
    """The board's entries in rank order, each with its `rank` (before the search: a search keeps
    the ranks of the whole board); cheap, so a caller can paginate before building rows
    (leaderboard_row). See leaderboard_rows for the rules."""
    decimals = {m["name"]: m["decimals"] for m in task.metrics}
    metric = sort_by if sort_by in decimals else task.primary_metric
    entries = list(entries if entries is not None else leaderboard_entries(task=task, user=user, now=now))
    if split == PRIVATE:
        entries = _revealed_entries(entries)
    elif task.leaderboard_mode == LeaderboardMode.LADDER:
        entries = _ladder_entries(entries)
    entries.sort(key=_rank_key(metric, decimals[metric], "private_metrics" if split == PRIVATE else "metrics"))
    if view != ALL:
        entries = _best_per_vendor(entries)
    needle = (search or "").strip().casefold()
    ranked = []
    for rank, entry in enumerate(entries, start=1):
        if needle and needle not in entry["vendor"].casefold() and needle not in entry["model_name"].casefold():
            continue
        ranked.append({**entry, "rank": rank})
    return ranked


def leaderboard_row(entry: dict, *, task: Task, show_per_site: bool, split: str = PUBLIC) -> dict:
    """One ranked entry as the board shows it: values rounded per the task's decimals."""
    private = split == PRIVATE
    return {
        "rank": entry["rank"],
        "submission_id": entry["submission_id"],
        "vendor": entry["vendor"],
        "model_name": entry["model_name"],
        "artifact_format": entry["artifact_format"],
        "model_size": entry["model_size"],
        "is_baseline": entry["is_baseline"],
        "is_final": entry["is_final"],
        # A fine-tuned entry ranks on its own and names the submission it was trained from.
        "is_fine_tuned": entry["is_fine_tuned"],
        "parent_submission_id": entry["parent_submission_id"],
        "parent_model_name": entry["parent_model_name"],
        "submitted_at": entry["created_at"],
        "metrics": rounded_metrics(task, entry["private_metrics"] if private else entry["metrics"]),
        "per_site": rounded_per_site(task, entry["per_site"]) if show_per_site and not private else None,
        "n_rows": entry["private_n_rows"] if private else entry["n_rows"],
        "n_sites": entry["n_sites"],
    }


def shows_per_site(*, task: Task, user=None) -> bool:
    """Per-site values: the owner always, everyone else where the task shows them."""
    owner = user is not None and is_task_owner(task=task, org_ids=organization_ids_of(user=user))
    return owner or task.show_per_site


def leaderboard_rows(
    *, task: Task, user=None, sort_by: str | None = None, split: str = PUBLIC, now: datetime | None = None,
    view: str = BEST, search: str | None = None, entries: list[dict] | None = None,
) -> list[dict]:
    """Entries `user` may see (None: a visitor) ranked by a metric in its own direction (TIE_RULE),
    values rounded per the task's decimals; per-site values for the owner, or for everyone if the
    task shows them.

    `view=best` (the default) keeps each vendor's best entry, `view=all` every scored submission.
    `search` keeps the rows whose vendor or model name contains it (case-insensitive); ranks are
    those of the whole board. `split=private` is the final board (the finals revealed at close,
    private-split scores); callers offer it only once the task has closed.
    """
    ranked = leaderboard_ranked(task=task, user=user, sort_by=sort_by, split=split, now=now, view=view,
                                search=search, entries=entries)  # fmt: skip
    per_site = shows_per_site(task=task, user=user)
    return [leaderboard_row(entry, task=task, show_per_site=per_site, split=split) for entry in ranked]


def leaderboard_best_over_time(
    *, task: Task, user=None, metric: str | None = None, now: datetime | None = None,
    entries: list[dict] | None = None,
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
        e for e in (entries if entries is not None else leaderboard_entries(task=task, user=user, now=now))
        if not (ladder and e["ladder_improved"] is False)
    ]  # fmt: skip

    def released_at(entry: dict):
        return entry["results_visible_at"] or entry["entry_created_at"]

    points: list[dict] = []
    best = None
    for entry in sorted(entries, key=lambda e: (released_at(e), e["id"])):
        value = entry["metrics"].get(metric)
        if value is None:
            continue
        best = value if best is None else better(best, value)
        points.append(
            {"at": released_at(entry), "best": round(best, decimals[metric]), "value": round(value, decimals[metric]),
             "model_name": entry["model_name"]}
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
