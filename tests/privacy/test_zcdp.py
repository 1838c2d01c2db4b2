"""The accountant against hand-computed values."""

import math

import pytest

from evaluator.federated.accounting import ORDERS
from evaluator.privacy.zcdp import epsilon_for_rho, noise_multiplier_for_rho, rho_for_epsilon


def _by_hand(rho, delta):
    """Balle et al. 2020, Theorem 21, for RDP(alpha) = alpha * rho, minimised over the orders."""
    return min(a * rho + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1) for a in ORDERS)


@pytest.mark.parametrize("rho", [0.001, 0.0172, 0.1, 1.0, 5.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-6])
def test_epsilon_matches_the_conversion_by_hand(rho, delta):
    assert epsilon_for_rho(rho, delta) == pytest.approx(_by_hand(rho, delta), rel=1e-9)
    # Never worse than the classic zCDP bound rho + 2 sqrt(rho ln(1/delta)).
    assert epsilon_for_rho(rho, delta) <= rho + 2 * math.sqrt(rho * math.log(1 / delta))


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 8.0, 50.0])
def test_rho_for_epsilon_inverts(epsilon):
    rho = rho_for_epsilon(epsilon, 1e-6)
    assert epsilon_for_rho(rho, 1e-6) <= epsilon
    assert epsilon_for_rho(rho * 1.001, 1e-6) > epsilon


def test_composition_adds_rho():
    one = rho_for_epsilon(1.0, 1e-6)
    # Ten releases at epsilon 1 cost far less than 10 under zCDP composition.
    assert 3.0 < epsilon_for_rho(10 * one, 1e-6) < 6.0


def test_noise_multiplier():
    assert noise_multiplier_for_rho(0.5) == 1.0
    with pytest.raises(ValueError):
        noise_multiplier_for_rho(0)
