import numpy as np
import pytest

from evaluator.federated.robust import cap_example_counts, coordinate_median, mean, norm_bound, trimmed_mean

N_SITES, DIM = 5, 1000


def _honest(rng):
    direction = rng.normal(size=DIM)
    direction /= np.linalg.norm(direction)
    return direction + rng.normal(scale=0.001, size=(N_SITES, DIM))  # similar honest sites


@pytest.mark.parametrize("attack", ["scaled_x100", "sign_flipped_x100", "sign_flipped"])
def test_median_and_trimmed_mean_resist_one_poisoned_site_and_the_mean_does_not(attack):
    rng = np.random.default_rng(20)
    updates = _honest(rng)
    honest_mean = updates[1:].mean(axis=0)
    honest_scale = np.linalg.norm(honest_mean)
    poison = {
        "scaled_x100": 100 * updates[0],
        "sign_flipped_x100": -100 * updates[0],
        "sign_flipped": -updates[0],
    }
    updates[0] = poison[attack]

    def distance(v):
        return np.linalg.norm(v - honest_mean) / honest_scale

    assert distance(coordinate_median(updates)) < 0.05
    assert distance(trimmed_mean(updates, 0.2, n_byzantine=1)) < 0.05
    assert distance(mean(updates)) > 0.3


def test_norm_bound_limits_the_scaled_attack_and_keeps_honest_updates():
    rng = np.random.default_rng(21)
    updates = _honest(rng)
    updates[0] *= 100
    bounded = norm_bound(updates, 1.5)
    assert np.all(np.linalg.norm(bounded, axis=1) <= 1.5 + 1e-9)
    np.testing.assert_array_equal(bounded[1:], updates[1:])
    honest_mean = updates[1:].mean(axis=0)
    assert (
        np.linalg.norm(bounded.mean(axis=0) - honest_mean)
        < np.linalg.norm(updates.mean(axis=0) - honest_mean) / 10
    )


def test_trimmed_mean_refuses_beta_below_f_over_n():
    updates = np.zeros((5, 3))
    with pytest.raises(ValueError, match="beta >= f/n"):
        trimmed_mean(updates, 0.1, n_byzantine=1)
    with pytest.raises(ValueError, match="beta >= f/n"):
        trimmed_mean(updates, 0.2, n_byzantine=2)
    trimmed_mean(updates, 0.4, n_byzantine=2)
    with pytest.raises(ValueError):
        trimmed_mean(updates, 0.5)


def test_trimmed_mean_with_zero_beta_is_the_mean_and_trims_per_coordinate():
    updates = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, -30.0], [100.0, 0.0], [4.0, 5.0]])
    np.testing.assert_allclose(trimmed_mean(updates, 0.0), updates.mean(axis=0))
    np.testing.assert_allclose(trimmed_mean(updates, 0.2), [3.0, 5.0])
    np.testing.assert_allclose(coordinate_median(updates), [3.0, 5.0])


def test_cap_example_counts():
    np.testing.assert_array_equal(cap_example_counts([10, 5_000, 10**9], 1000), [10, 1000, 1000])
    for bad in ([-1], [1.5]):
        with pytest.raises(ValueError):
            cap_example_counts(bad, 10)
    # a site claiming a billion examples gets no more weight than the cap gives it
    updates = np.array([[1.0], [1.0], [-50.0]])
    weights = cap_example_counts([100, 100, 10**9], 100)
    assert mean(updates, weights)[0] == pytest.approx(-16.0)


def test_rules_refuse_non_finite_or_malformed_updates():
    with pytest.raises(ValueError):
        coordinate_median(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError):
        coordinate_median(np.zeros(3))
