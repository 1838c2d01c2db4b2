"""The privacy currency: zero-concentrated DP (rho), shown as (epsilon, delta).

A Gaussian mechanism with L2 sensitivity D and noise std s is rho-zCDP with
``rho = D^2 / (2 s^2)``, and zCDP composes by adding rhos (Bun & Steinke 2016). Budgets are
therefore plain sums that a database can reserve atomically. rho-zCDP is RDP of order alpha at
``alpha * rho`` for every alpha > 1, which Opacus' accountant converts to (epsilon, delta) with
the conversion of Balle et al. 2020 (Theorem 21), minimised over ``ORDERS``. The same orders and
conversion serve federated fine-tuning (``evaluator.federated.accounting``).

Opacus is imported lazily; conversions are cached (they are asked for the same few values).
"""

from __future__ import annotations

import functools
import math

from evaluator.federated.accounting import ORDERS

ACCOUNTANT = "zCDP, converted by Opacus' RDP accountant (Balle et al. 2020)"


def _check_delta(delta: float) -> None:
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


@functools.lru_cache(maxsize=4096)
def epsilon_for_rho(rho: float, delta: float) -> float:
    """The epsilon at ``delta`` of a rho-zCDP guarantee (0 for rho = 0)."""
    _check_delta(delta)
    if not (rho >= 0 and math.isfinite(rho)):
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")
    if rho == 0:
        return 0.0
    from opacus.accountants.analysis.rdp import get_privacy_spent

    eps, _order = get_privacy_spent(orders=list(ORDERS), rdp=[a * rho for a in ORDERS], delta=delta)
    return float(eps)


@functools.lru_cache(maxsize=4096)
def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """The largest rho whose (epsilon, delta) guarantee is within ``epsilon`` (bisection)."""
    _check_delta(delta)
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    lo, hi = 0.0, max(1.0, epsilon)
    while epsilon_for_rho(hi, delta) <= epsilon:  # epsilon grows without bound in rho
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if epsilon_for_rho(mid, delta) <= epsilon:
            lo = mid
        else:
            hi = mid
    return lo


def noise_multiplier_for_rho(rho: float) -> float:
    """z = s / D of the Gaussian mechanism that is exactly rho-zCDP."""
    if not (rho > 0 and math.isfinite(rho)):
        raise ValueError(f"rho must be a finite number > 0, got {rho!r}")
    return 1.0 / math.sqrt(2.0 * rho)
