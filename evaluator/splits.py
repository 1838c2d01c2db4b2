"""The public/private split of a site's test rows: seeded, owner-chosen, recomputable."""

from __future__ import annotations

import numpy as np


def public_private_split(n_rows: int, *, public_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (public, private). The same seed and size always give the same split, so a
    restarted agent or a second agent of the site scores every submission on the same rows."""
    if not 0.0 < public_fraction <= 1.0:
        raise ValueError("public_fraction must be in (0, 1]")
    order = np.random.default_rng(seed).permutation(n_rows)
    n_public = n_rows if public_fraction >= 1.0 else max(1, min(n_rows - 1, round(public_fraction * n_rows)))
    return np.sort(order[:n_public]), np.sort(order[n_public:])
