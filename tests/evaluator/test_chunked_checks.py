"""The checks and the normalisation of predictions, a chunk of rows at a time
(``metrics.ROWS_PER_CHUNK``): the same arrays, and the same error in the same order, as one pass
over all rows."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator import metrics
from evaluator.metrics import InvalidPredictions, class_probabilities
from evaluator.outputs import validate_predictions
from evaluator.sandbox import InvalidOutput

ROWS = 1000
SMALL_CHUNKS = 64  # 16 chunks, the last one short


def _probabilities(k: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(k), size=ROWS)


def _both(monkeypatch, function, array, **kwargs):
    """``function`` with small chunks, then with one chunk: each result or error, as a pair."""
    outcomes = []
    for size in (SMALL_CHUNKS, 10 * ROWS):
        monkeypatch.setattr(metrics, "ROWS_PER_CHUNK", size)
        try:
            outcomes.append(function(array.copy(), **kwargs))
        except (InvalidPredictions, InvalidOutput) as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
    return outcomes


def _slightly_out_of_range() -> np.ndarray:
    p = _probabilities()
    p[900, 0] = -5e-7  # one late chunk leaves [0, 1] within the tolerance: only it is clipped
    return p


def _late_nan_after_an_early_bad_sum() -> np.ndarray:
    p = _probabilities()
    p[3] = [0.9, 0.9, 0.9]  # a bad row sum in the first chunk
    p[990, 1] = np.nan  # and a NaN in the last: "finite" is reported, as in one pass
    return p


def _bad_sum_only() -> np.ndarray:
    p = _probabilities()
    p[500] = [0.2, 0.2, 0.2]
    return p


CASES = {
    "good": _probabilities,
    "slightly out of range in one chunk": _slightly_out_of_range,
    "a late NaN after an early bad sum": _late_nan_after_an_early_bad_sum,
    "a bad sum only": _bad_sum_only,
    "out of range": lambda: _probabilities() * 1.5,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_class_probabilities_in_chunks_are_those_of_one_pass(monkeypatch, case):
    small, whole = _both(monkeypatch, class_probabilities, CASES[case](), n_rows=ROWS, n_classes=3)
    if isinstance(whole, str):
        assert small == whole
    else:
        assert np.array_equal(small, whole)
        assert np.allclose(whole.sum(axis=1), 1.0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_validation_in_chunks_reports_what_one_pass_reports(monkeypatch, case):
    small, whole = _both(monkeypatch, validate_predictions, CASES[case](), n_rows=ROWS,
                         task_type="multiclass_classification", n_classes=3)  # fmt: skip
    if isinstance(whole, str):
        assert small == whole
    else:
        assert np.array_equal(small, whole)


def test_expected_errors_are_the_ones_one_pass_gives():
    with pytest.raises(InvalidPredictions, match="finite"):
        class_probabilities(_late_nan_after_an_early_bad_sum(), n_rows=ROWS, n_classes=3)
    with pytest.raises(InvalidPredictions, match="sum to 1"):
        class_probabilities(_bad_sum_only(), n_rows=ROWS, n_classes=3)
    with pytest.raises(InvalidOutput, match="NaN or infinite"):
        validate_predictions(_late_nan_after_an_early_bad_sum(), n_rows=ROWS, task_type="multiclass_classification",
                             n_classes=3)  # fmt: skip


def test_binary_vectors_and_empty_outputs_still_work():
    p1 = np.random.default_rng(1).random(ROWS)
    assert np.array_equal(class_probabilities(p1, n_rows=ROWS, n_classes=2)[:, 1], p1)
    assert class_probabilities(np.empty((0, 2)), n_rows=0, n_classes=2).shape == (0, 2)
