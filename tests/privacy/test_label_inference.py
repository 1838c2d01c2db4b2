"""The label bound of a record-level (epsilon, delta) guarantee, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from evaluator.privacy.label_inference import label_guess_bound


def test_no_privacy_loss_leaves_chance_and_delta_alone():
    assert label_guess_bound(0.0, 0.0, 3) == pytest.approx(1 / 3)
    assert label_guess_bound(0.0, 0.0, 10) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "epsilon, delta, k, expected",
    [
        # (e^2 + 1 * 0) / (e^2 + 1): two classes, eps 1, delta 0
        (1.0, 0.0, 2, math.exp(2) / (math.exp(2) + 1)),
        # (e^2 + 2 (1 + e) 1e-5) / (e^2 + 2): three classes, eps 1
        (1.0, 1e-5, 3, (math.exp(2) + 2 * (1 + math.e) * 1e-5) / (math.exp(2) + 2)),
        # eps 0.5, K 10: (e + 9 (1 + e^0.5) 1e-6) / (e + 9)
        (0.5, 1e-6, 10, (math.e + 9 * (1 + math.exp(0.5)) * 1e-6) / (math.e + 9)),
    ],
)
def test_hand_computed_values(epsilon, delta, k, expected):
    assert label_guess_bound(epsilon, delta, k) == pytest.approx(expected, rel=1e-12)


def test_large_epsilon_bounds_nothing():
    assert label_guess_bound(8.0, 1e-5, 3) == pytest.approx(1.0, abs=1e-6)
    assert label_guess_bound(1e6, 1e-5, 3) == 1.0


def test_bad_arguments_are_refused():
    for args in ((-1.0, 0.0, 3), (1.0, 1.0, 3), (1.0, 0.0, 1)):
        with pytest.raises(ValueError):
            label_guess_bound(*args)
