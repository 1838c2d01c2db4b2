"""What differential privacy allows an attacker, to set the measured figures against.

For one row and one secret bit with even prior odds, an (epsilon, delta)-DP release lets no test
guess the bit with probability above ``e^eps / (1 + e^eps) + delta``. The Gaussian mechanism is
tighter than its (epsilon, delta) figure: a rho-zCDP Gaussian release whose two hypotheses are
one sensitivity apart is a test between two normals ``sqrt(2 rho)`` standard deviations apart,
and the best test succeeds with probability ``Phi(sqrt(rho / 2))``. Composition adds rhos, so
the same holds for k releases with rho replaced by ``k * rho``. Epsilons come from the hub's own
accountant (``evaluator.privacy.zcdp``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def epsilon_bound(epsilon: float, delta: float) -> float:
    """The most a test can get right of one even-odds bit under (epsilon, delta)-DP."""
    return min(1.0, math.exp(epsilon) / (1.0 + math.exp(epsilon)) + delta)


def gaussian_bound(rho: float) -> float:
    """The most the best test gets right of one even-odds bit moved by one sensitivity, through
    a rho-zCDP Gaussian release (tight for the mechanism)."""
    return normal_cdf(math.sqrt(max(rho, 0.0) / 2.0))


def wilson(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """A 95% interval for a success rate measured as ``correct`` of ``n``."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Budget:
    """k releases of ``epsilon`` each at ``delta``, and what they allow on one row's bit."""

    releases: int
    epsilon_per_release: float
    delta: float
    rho_per_release: float
    rho: float
    epsilon: float
    epsilon_bound: float
    gaussian_bound: float

    @classmethod
    def of(cls, releases: int, *, epsilon: float, delta: float) -> Budget:
        from evaluator.privacy.zcdp import epsilon_for_rho, rho_for_epsilon

        rho1 = rho_for_epsilon(epsilon, delta)
        rho = releases * rho1
        eps = epsilon_for_rho(rho, delta)
        return cls(releases, epsilon, delta, rho1, rho, eps, epsilon_bound(eps, delta), gaussian_bound(rho))

    def as_dict(self) -> dict:
        return asdict(self)
