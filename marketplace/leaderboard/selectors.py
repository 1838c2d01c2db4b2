from marketplace.catalog.metric_catalog import LOWER, metric_direction
from marketplace.catalog.models import LeaderboardMode, Task
from marketplace.leaderboard.models import LeaderboardEntry

PUBLIC = "public"
PRIVATE = "private"


def _rounded(metrics: dict[str, float], decimals: dict[str, int]) -> dict[str, float]:
    return {name: round(value, decimals[name]) for name, value in metrics.items()}


def _final_entries(task: Task, entries: list[LeaderboardEntry]) -> list[LeaderboardEntry]:
    """The private board: each vendor's nominated submissions, or, if it nominated none, its
    best `final_submissions` by public primary score (what a vendor would have picked)."""
    sign = 1 if metric_direction(task.primary_metric) == LOWER else -1
    by_vendor: dict[int, list[LeaderboardEntry]] = {}
    for entry in entries:
        by_vendor.setdefault(entry.submission.vendor_id, []).append(entry)
    chosen: list[LeaderboardEntry] = []
    for vendor_entries in by_vendor.values():
        nominated = [e for e in vendor_entries if e.submission.is_final]
        if not nominated:
            nominated = sorted(vendor_entries, key=lambda e: sign * e.metrics[task.primary_metric])
        chosen.extend(nominated[: task.final_submissions])
    return [e for e in chosen if e.private_metrics is not None]


def _ladder_entries(entries: list[LeaderboardEntry]) -> list[LeaderboardEntry]:
    """Ladder mode shows each vendor's current ladder score: its latest scored submission, whose
    released values are the sites' best-so-far for that vendor."""
    latest: dict[int, LeaderboardEntry] = {}
    for entry in sorted(entries, key=lambda e: (e.submission.created_at, e.submission_id)):
        latest[entry.submission.vendor_id] = entry
    return list(latest.values())


def leaderboard_rows(*, task: Task, sort_by: str | None = None, split: str = PUBLIC) -> list[dict]:
    """Entries ranked by a metric in its own direction, values rounded per the task's decimals.

    `split=private` is the final board (nominated submissions, private-split scores); callers
    offer it only once the task has closed.
    """
    decimals = {m["name"]: m["decimals"] for m in task.metrics}
    metric = sort_by if sort_by in decimals else task.primary_metric
    entries = list(
        LeaderboardEntry.objects.filter(task=task).select_related("submission__vendor", "submission__parent")
    )
    if split == PRIVATE:
        entries = _final_entries(task, entries)
    elif task.leaderboard_mode == LeaderboardMode.LADDER:
        entries = _ladder_entries(entries)

    def values_of(entry: LeaderboardEntry) -> dict[str, float]:
        return entry.private_metrics if split == PRIVATE else entry.metrics

    sign = 1 if metric_direction(metric) == LOWER else -1
    entries.sort(key=lambda e: (sign * values_of(e)[metric], e.submission.created_at))
    rows = []
    for rank, entry in enumerate(entries, start=1):
        submission = entry.submission
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
                "metrics": _rounded(values_of(entry), decimals),
                "per_site": [
                    {**site, "metrics": _rounded(site["metrics"], decimals)} for site in entry.per_site
                ]
                if task.show_per_site and split == PUBLIC
                else None,
                "n_rows": entry.private_n_rows if split == PRIVATE else entry.n_rows,
                "n_sites": entry.n_sites,
            }
        )
    return rows


def leaderboard_best_over_time(*, task: Task, metric: str | None = None) -> list[dict]:
    """The best score of the board after each scoring, in time order (rounded per the task)."""
    decimals = {m["name"]: m["decimals"] for m in task.metrics}
    metric = metric if metric in decimals else task.primary_metric
    better = min if metric_direction(metric) == LOWER else max
    points: list[dict] = []
    best = None
    for entry in LeaderboardEntry.objects.filter(task=task).select_related("submission").order_by("created_at", "id"):
        value = entry.metrics.get(metric)
        if value is None:
            continue
        best = value if best is None else better(best, value)
        points.append(
            {"at": entry.created_at, "best": round(best, decimals[metric]), "value": round(value, decimals[metric]),
             "model_name": entry.submission.name}
        )  # fmt: skip
    return points


def ladder_improved_of(*, submission_ids) -> dict[int, bool | None]:
    """Ladder mode: whether each scored submission moved its vendor's best (part of the released
    transcript); None where the sites did not say (plain mode)."""
    return dict(
        LeaderboardEntry.objects.filter(submission_id__in=list(submission_ids)).values_list(
            "submission_id", "ladder_improved"
        )
    )
