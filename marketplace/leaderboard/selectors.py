from marketplace.catalog.metric_catalog import LOWER, metric_direction
from marketplace.catalog.models import Task
from marketplace.leaderboard.models import LeaderboardEntry


def leaderboard_rows(*, task: Task, sort_by: str | None = None) -> list[dict]:
    """Entries ranked by a metric in its own direction, values rounded per the task's decimals."""
    decimals = {m["name"]: m["decimals"] for m in task.metrics}
    metric = sort_by if sort_by in decimals else task.primary_metric
    entries = list(
        LeaderboardEntry.objects.filter(task=task).select_related("submission__vendor")
    )
    sign = 1 if metric_direction(metric) == LOWER else -1
    entries.sort(key=lambda e: (sign * e.metrics[metric], e.submission.created_at))
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
                "submitted_at": submission.created_at,
                "metrics": {name: round(value, decimals[name]) for name, value in entry.metrics.items()},
                "per_site": [
                    {**site, "metrics": {k: round(v, decimals[k]) for k, v in site["metrics"].items()}}
                    for site in entry.per_site
                ]
                if task.show_per_site
                else None,
                "n_rows": entry.n_rows,
                "n_sites": entry.n_sites,
            }
        )
    return rows
