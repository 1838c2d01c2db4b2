"""Scores from what the sites released: pooled statistics, and the Ladder on top of them.

The hub sums the sites' noised statistics and computes each metric from the sum over all their
rows (evaluator/privacy/statistics.py), so a score does not depend on how the owner spread its
rows over sites, and a metric undefined at one site is defined on the pool. Everything here is
post-processing of DP releases: it costs no privacy.
"""

from __future__ import annotations

from collections.abc import Sequence

from evaluator.privacy.statistics import ReleaseSpec, check_statistics, metrics_from_statistics, pool
from marketplace.catalog.metric_catalog import HIGHER, metric_direction


def pooled_metrics(
    spec: ReleaseSpec, site_releases: Sequence[tuple[dict, int]]
) -> tuple[dict[str, float], int]:
    """(metrics of the summed statistics, total rows) from each site's (statistics, n_rows)."""
    if not site_releases:
        raise ValueError("No release to pool.")
    parsed = [check_statistics(spec, statistics) for statistics, _ in site_releases]
    n_rows = sum(rows for _, rows in site_releases)
    return metrics_from_statistics(spec, pool(spec, parsed), n_rows), n_rows


def ladder_improves(*, metric: str, value: float | None, best: float | None, threshold: float) -> bool:
    """Ladder (Blum & Hardt 2015) on the DP scores: an entry improves when its primary metric beats
    the vendor's best improving entry by at least ``threshold`` (the first defined one does)."""
    if value is None:
        return False
    if best is None:
        return True
    if metric_direction(metric) == HIGHER:
        return value >= best + threshold
    return value <= best - threshold
