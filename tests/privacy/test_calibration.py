"""noise_multiplier_for: the calibrated sigma spends at most the cap, and barely less."""

import pytest

from evaluator.federated.accounting import record_level_epsilon
from evaluator.privacy.calibration import noise_multiplier_for


@pytest.mark.parametrize(
    ("epsilon", "rounds", "q", "epochs"),
    [
        (8.0, 50, 512 / 670, 1),
        (1.0, 50, 512 / 670, 1),
        (8.0, 1, 1 / 3, 1),
        (2.0, 10, 0.1, 2),
        (8.0, 50, 32 / 96, 1),
    ],
)
def test_calibrated_sigma_spends_the_cap_and_no_more(epsilon, rounds, q, epochs):
    sigma = noise_multiplier_for(
        epsilon=epsilon, rounds=rounds, sample_rate=q, local_epochs=epochs, delta=1e-5
    )
    at = record_level_epsilon(
        rounds=rounds, noise_multiplier=sigma, sample_rate=q, local_epochs=epochs, delta=1e-5
    )
    below = record_level_epsilon(
        rounds=rounds, noise_multiplier=sigma / 1.002, sample_rate=q, local_epochs=epochs, delta=1e-5
    )
    assert at <= epsilon < below


def test_the_benchmark_operating_point():
    # BENCHMARKS.md (issue 10): q = 512/670, 2 steps per round, 50 rounds, eps 8 -> sigma 4.93
    sigma = noise_multiplier_for(epsilon=8.0, rounds=50, sample_rate=512 / 670, local_epochs=1, delta=1e-5)
    assert sigma == pytest.approx(4.93, abs=0.01)


def test_more_rounds_need_more_noise():
    sigmas = [
        noise_multiplier_for(epsilon=8.0, rounds=r, sample_rate=0.25, local_epochs=1, delta=1e-5)
        for r in (1, 10, 100)
    ]
    assert sigmas[0] < sigmas[1] < sigmas[2]


def test_an_unreachable_budget_is_refused():
    with pytest.raises(ValueError):
        noise_multiplier_for(epsilon=0.0, rounds=10, sample_rate=0.5, local_epochs=1, delta=1e-5)
    with pytest.raises(ValueError):
        noise_multiplier_for(epsilon=1e-6, rounds=10**6, sample_rate=1.0, local_epochs=1, delta=1e-5)
