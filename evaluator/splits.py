"""The public/private split of a site's test rows: seeded, owner-chosen, recomputable."""

from __future__ import annotations

import numpy as np


def split_sizes(n_rows: int, *, public_fraction: float) -> tuple[int, int]:
    """(public, private) row counts of ``public_private_split``, without drawing the split
    (the hub checks a release's row count with it: no permutation of a million rows per post)."""
    if not 0.0 < public_fraction <= 1.0:
        raise ValueError("public_fraction must be in (0, 1]")
    n_public = n_rows if public_fraction >= 1.0 else max(1, min(n_rows - 1, round(public_fraction * n_rows)))
    n_public = min(n_public, n_rows)  # 0 rows: nothing either side (a cut past the end)
    return n_public, n_rows - n_public


def public_private_split(n_rows: int, *, public_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (public, private). The same seed and size always give the same split, so a
    restarted agent or a second agent of the site scores every submission on the same rows."""
    n_public, _ = split_sizes(n_rows, public_fraction=public_fraction)
    if n_public == n_rows:  # every row public (the default): the sorted permutation is 0..n-1
        return np.arange(n_rows, dtype=np.int64), np.empty(0, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[:n_public]), np.sort(order[n_public:])
