"""The label decoder's expected success (benchmarks/federated_label_recovery.py) against a direct
simulation of what it reads: a row's slot holds ``e_y - 1/3`` plus N(0, s^2) per entry, and the
decoder names the largest entry (issue 10: the trade-off table of docs/privacy-fine-tuning.md)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from federated_label_recovery import K, expected_recovery, pooled  # noqa: E402


@pytest.mark.parametrize("sigma_sum", [0.73, 5.2, 14.7])
def test_the_formula_matches_a_simulation_of_the_decoder(sigma_sum):
    rng = np.random.default_rng(0)
    n = 400_000
    labels = rng.integers(0, K, size=n)
    slots = np.eye(K)[labels] - 1 / K + sigma_sum * rng.standard_normal((n, K))
    simulated = float(np.mean(slots.argmax(1) == labels))
    assert expected_recovery(sigma_sum) == pytest.approx(simulated, abs=4 * np.sqrt(0.25 / n))


def test_the_limits_and_the_pooled_count():
    assert expected_recovery(1e-3) == pytest.approx(1.0)
    assert expected_recovery(1e4) == pytest.approx(1 / K, abs=1e-4)
    both = pooled([{"recovered": 130, "rows": 365}, {"recovered": 125, "rows": 365}])
    assert both["rows"] == 730 and both["excess"] == pytest.approx(255 - 730 / 3)
    assert 0.05 < both["p_value_vs_chance"] < 0.5
