"""The privacy currency: zero-concentrated DP (rho), shown as (epsilon, delta).

A Gaussian mechanism with L2 sensitivity D and noise std s is rho-zCDP with
``rho = D^2 / (2 s^2)``, and zCDP composes by adding rhos (Bun & Steinke 2016). Budgets are
therefore plain sums that a database can reserve atomically. rho-zCDP is RDP of order alpha at
``alpha * rho`` for every alpha > 1, which ``epsilon_from_rdp`` converts to (epsilon, delta) with
the conversion of Balle et al. 2020 (Theorem 21), minimised over ``ORDERS``. The same orders and
conversion serve federated fine-tuning (``evaluator.federated.accounting``).

The conversion is written out here (numpy only; no torch): it is Opacus' ``get_privacy_spent``
(``opacus.accountants.analysis.rdp``) formula for formula, so every epsilon is the one Opacus gives
(tests/privacy/test_accounting_matches_opacus.py checks it). ``dp_accounting``'s ``compute_epsilon``
is not used: it returns 0 when ``delta**2 + expm1(-rdp) > 0`` (a KL bound), needs alpha > 1.01
and clips at 0, so it differs from Opacus for small RDP values. Conversions are cached (asked for the same few values).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from evaluator.federated.accounting import ORDERS

ACCOUNTANT = "zCDP, converted to (epsilon, delta) by the RDP conversion of Balle et al. 2020 (as in Opacus)"


def _check_delta(delta: float) -> None:
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def epsilon_from_rdp(orders: Sequence[float] | np.ndarray, rdp: Sequence[float] | np.ndarray, delta: float) -> float:
    """(epsilon, delta) of an RDP curve: Balle et al. 2020, Theorem 21, as Opacus computes it.

    ``eps = min_alpha rdp(alpha) - (log(delta) + log(alpha)) / (alpha - 1) + log((alpha - 1) / alpha)``;
    NaN entries are ignored and an all-NaN curve means no privacy (``inf``), as in Opacus.
    """
    orders_vec = np.atleast_1d(np.asarray(orders, dtype=np.float64))
    rdp_vec = np.atleast_1d(np.asarray(rdp, dtype=np.float64))
    if orders_vec.shape != rdp_vec.shape:
        raise ValueError(f"orders and rdp must have the same length, got {len(orders_vec)} and {len(rdp_vec)}")
    with np.errstate(invalid="ignore", divide="ignore"):
        eps = (
            rdp_vec
            - (np.log(delta) + np.log(orders_vec)) / (orders_vec - 1)
            + np.log((orders_vec - 1) / orders_vec)
        )
    if np.isnan(eps).all():
        return math.inf
    return float(eps[np.nanargmin(eps)])


@functools.lru_cache(maxsize=4096)
def epsilon_for_rho(rho: float, delta: float) -> float:
    """The epsilon at ``delta`` of a rho-zCDP guarantee (0 for rho = 0)."""
    _check_delta(delta)
    if not (rho >= 0 and math.isfinite(rho)):
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")
    if rho == 0:
        return 0.0
    return epsilon_from_rdp(ORDERS, [a * rho for a in ORDERS], delta)


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
