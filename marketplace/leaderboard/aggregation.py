"""Combining per-site metrics into one score: a mean weighted by each site's row count."""


def weighted_metrics(site_results: list[tuple[dict[str, float], int]]) -> dict[str, float]:
    total = sum(rows for _, rows in site_results)
    if total <= 0:
        raise ValueError("No rows to aggregate.")
    names = site_results[0][0].keys()
    return {name: sum(metrics[name] * rows for metrics, rows in site_results) / total for name in names}
