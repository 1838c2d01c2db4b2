"""The noise a fine-tuning run needs to spend exactly its epsilon cap over its planned rounds.

A fixed sigma (the task default 2.0) lets a run stop early at the cap and spends the budget in a
few large rounds; calibrating sigma to ``(cap, rounds, q, local epochs, delta)`` instead spreads it
evenly, so every round leaks less (one round of the label-recovery replay, q = 1/3, at sigma 2.0
costs eps 1.80; calibrated to eps 8 over 50 rounds, sigma 2.76, it costs 1.13: issue 10). The accountant is
the one the sites and the hub use (``evaluator.federated.accounting.record_level_epsilon``: RDP of
the Poisson-subsampled Gaussian, Opacus' formulas), so the calibrated sigma is never under the cap.
"""

from __future__ import annotations

import math

LOWEST, HIGHEST = 0.1, 1e4  # sigma search range; below 0.1 epsilon is astronomic, above 1e4 it is ~0


def noise_multiplier_for(
    *,
    epsilon: float,
    rounds: int,
    sample_rate: float,
    local_epochs: int,
    delta: float,
    tolerance: float = 1e-3,
) -> float:
    """The smallest sigma (to ``tolerance``, relative) whose record-level epsilon after ``rounds``
    rounds is at most ``epsilon``. Raises ``ValueError`` if even sigma 1e4 does not reach it."""
    from evaluator.federated.accounting import record_level_epsilon

    if not (math.isfinite(epsilon) and epsilon > 0) or rounds < 1:
        raise ValueError("need epsilon > 0 and rounds >= 1")

    def spent(sigma: float) -> float:
        return record_level_epsilon(
            rounds=rounds,
            noise_multiplier=sigma,
            sample_rate=sample_rate,
            local_epochs=local_epochs,
            delta=delta,
        )

    lo, hi = LOWEST, HIGHEST
    if spent(hi) > epsilon:
        raise ValueError(f"no sigma up to {HIGHEST:g} keeps epsilon under {epsilon:g}")
    if spent(lo) <= epsilon:
        return lo
    while hi / lo > 1 + tolerance:  # bisect in log space: epsilon falls monotonically with sigma
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if spent(mid) > epsilon else (lo, mid)
    return hi
