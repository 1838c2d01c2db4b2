import math

import pytest

from evaluator.federated.accounting import (
    ORDERS,
    BudgetTracker,
    PrivacyLedger,
    effective_noise_multiplier,
    epsilon_after,
)


def _hand_epsilon(z, rounds, delta):
    """Gaussian mechanism, sample rate 1: RDP(alpha) = alpha / (2 z^2) per round, summed over rounds,
    converted with Balle et al. 2020 Thm 21 (what opacus uses), minimized over the orders."""
    best = math.inf
    for a in ORDERS:
        rdp = rounds * a / (2 * z * z)
        eps = rdp + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
        best = min(best, eps)
    return best


@pytest.mark.parametrize(
    ("z", "rounds", "delta"),
    [(1.0, 10, 1e-5), (2.0, 100, 1e-6), (0.8, 1, 1e-5), (5.0, 3, 1e-5)],
)
def test_epsilon_matches_hand_computed_gaussian_rdp(z, rounds, delta):
    assert epsilon_after(rounds, z, 1.0, delta) == pytest.approx(_hand_epsilon(z, rounds, delta), abs=1e-6)


def test_hand_computation_at_one_order_is_what_we_think():
    # sanity of the formula itself at alpha = 2, z = 1, one round: rdp = 1, eps = 1 + log(1/2) - log(2 delta)
    a, z, delta = 2.0, 1.0, 1e-5
    eps = 1 * a / (2 * z * z) + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
    assert eps == pytest.approx(1 - 2 * math.log(2) - math.log(delta))


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    e = [epsilon_after(r, 1.0, 1.0, 1e-5) for r in (1, 2, 10, 100)]
    assert e == sorted(e) and e[0] > 0
    assert epsilon_after(10, 2.0, 1.0, 1e-5) < epsilon_after(10, 1.0, 1.0, 1e-5)
    assert epsilon_after(10, 1.0, 0.1, 1e-5) < epsilon_after(10, 1.0, 1.0, 1e-5)  # sub-sampling amplifies


def test_no_rounds_cost_nothing_and_no_noise_is_infinite():
    assert epsilon_after(0, 1.0, 1.0, 1e-5) == 0.0
    assert epsilon_after(1, 0.0, 1.0, 1e-5) == math.inf


@pytest.mark.parametrize(
    ("args"),
    [(-1, 1.0, 1.0, 1e-5), (1, -1.0, 1.0, 1e-5), (1, 1.0, 0.0, 1e-5), (1, 1.0, 1.0, 0.0), (1, 1.0, 1.0, 1.0)],
)
def test_bad_parameters_are_refused(args):
    with pytest.raises(ValueError):
        epsilon_after(*args)


def test_ledger_stops_before_exceeding_the_cap():
    cap = 3.0
    ledger = PrivacyLedger(delta=1e-5, noise_multiplier=2.0)
    rounds = 0
    while not ledger.would_exceed(cap):
        ledger.record_round()
        rounds += 1
        assert rounds < 10_000
    assert ledger.epsilon <= cap
    assert ledger.epsilon_if(rounds=1) > cap
    assert ledger.rounds == rounds
    assert ledger.epsilon == pytest.approx(epsilon_after(rounds, 2.0, 1.0, 1e-5))
    assert epsilon_after(rounds + 1, 2.0, 1.0, 1e-5) > cap
    assert PrivacyLedger(delta=1e-5, noise_multiplier=2.0).rounds_within(cap) == rounds


def test_ledger_refuses_even_the_first_round_when_the_cap_is_too_small():
    ledger = PrivacyLedger(delta=1e-5, noise_multiplier=0.5)
    assert ledger.epsilon == 0.0
    assert ledger.would_exceed(0.1)
    assert ledger.rounds_within(0.1) == 0


def test_ledger_composes_rounds_with_different_noise_and_round_trips():
    ledger = BudgetTracker(delta=1e-5, noise_multiplier=1.5)
    ledger.record_round()
    ledger.record_round()
    ledger.record_round(noise_multiplier=effective_noise_multiplier(1.5, n_sites=5, n_contributing=3))
    assert [h[2] for h in ledger.history] == [2, 1]
    assert ledger.epsilon > epsilon_after(3, 1.5, 1.0, 1e-5)  # dropouts weakened the noise
    again = PrivacyLedger.from_dict(ledger.to_dict())
    assert again == ledger and again.epsilon == ledger.epsilon


def test_effective_noise_multiplier_after_dropouts():
    assert effective_noise_multiplier(2.0, 4, 4) == 2.0
    assert effective_noise_multiplier(2.0, 4, 1) == 1.0
    with pytest.raises(ValueError):
        effective_noise_multiplier(1.0, 3, 0)


def test_rounds_within_respects_max_rounds():
    assert PrivacyLedger(delta=1e-5, noise_multiplier=50.0).rounds_within(100.0, max_rounds=64) == 64


# --- exact Gaussian DP accountant of full-batch record-level rounds (issue 10) ---------------


def _hand_gdp_delta(mu, eps):
    """Balle and Wang 2018, Thm 8, with the normal CDF from math.erf (not scipy)."""

    def phi(t):
        return 0.5 * (1 + math.erf(t / math.sqrt(2)))

    return phi(-eps / mu + mu / 2) - math.exp(eps) * phi(-eps / mu - mu / 2)


@pytest.mark.parametrize(("z", "steps"), [(1.0, 1), (4.244, 50), (26.4, 50), (2.0, 7)])
def test_full_batch_record_level_epsilon_is_the_exact_gaussian_dp_one(z, steps):
    from evaluator.federated.accounting import record_level_ledger

    ledger = record_level_ledger(noise_multiplier=z, sample_rate=1.0, local_epochs=1, delta=1e-5)
    assert ledger.accountant == "gdp" and "Gaussian DP" in ledger.accountant_name
    eps = ledger.epsilon_if(rounds=steps)
    mu = math.sqrt(steps) / z
    assert _hand_gdp_delta(mu, eps) == pytest.approx(1e-5, rel=1e-6)  # spends exactly delta at eps
    assert _hand_gdp_delta(mu, eps * 0.99) > 1e-5  # and a smaller eps would not hold
    assert eps < epsilon_after(steps, z, 1.0, 1e-5)  # tighter than the RDP conversion


def test_gdp_operating_point_of_the_benchmark_and_opacus_prv_agrees():
    from evaluator.federated.accounting import record_level_epsilon

    eps = record_level_epsilon(rounds=50, noise_multiplier=4.244, sample_rate=1.0, local_epochs=1, delta=1e-5)
    assert eps == pytest.approx(8.0, abs=0.01)  # RDP needs sigma 4.51 for the same epsilon
    assert epsilon_after(50, 4.509, 1.0, 1e-5) == pytest.approx(8.0, abs=0.01)
    opacus = pytest.importorskip("opacus.accountants")
    prv = opacus.PRVAccountant()
    prv.history = [(4.244, 1.0, 50)]
    assert prv.get_epsilon(delta=1e-5) == pytest.approx(eps, rel=0.01)  # an independent numerical accountant


def test_gdp_ledger_round_trips_composes_and_is_refused_for_subsampled_steps():
    from evaluator.federated.accounting import record_level_ledger

    ledger = record_level_ledger(noise_multiplier=3.0, sample_rate=1.0, local_epochs=1, delta=1e-5)
    ledger.record_round()
    ledger.record_round(noise_multiplier=6.0)
    again = PrivacyLedger.from_dict(ledger.to_dict())
    assert again.accountant == "gdp" and again.epsilon == ledger.epsilon
    mu = math.sqrt(1 / 9 + 1 / 36)  # adaptive composition of GDP: mu adds in squares
    assert _hand_gdp_delta(mu, ledger.epsilon) == pytest.approx(1e-5, rel=1e-6)
    old = ledger.to_dict()
    del old["accountant"]  # a ledger stored before the GDP accountant existed keeps RDP
    assert PrivacyLedger.from_dict(old).accountant == "rdp"
    assert record_level_ledger(noise_multiplier=3.0, sample_rate=0.5, local_epochs=1, delta=1e-5).accountant == "rdp"
    with pytest.raises(ValueError):
        PrivacyLedger(delta=1e-5, noise_multiplier=1.0, sample_rate=0.5, accountant="gdp")
    with pytest.raises(ValueError):
        ledger.epsilon_if(sample_rate=0.5)
    assert PrivacyLedger(delta=1e-5, noise_multiplier=0.0, accountant="gdp").epsilon_if() == math.inf
