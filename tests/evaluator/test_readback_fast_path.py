"""The agent's read-back fast path against the reference it replaced: ``read_npy`` (the file
read straight into its array) gives what ``parse_npy`` of the file's bytes gives, and the
probabilities normalised without the redundant passes are the ones the plain code computed."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator import metrics
from evaluator.outputs import load_predictions, parse_npy, read_npy
from evaluator.sandbox import InvalidOutput

RNG = np.random.default_rng(11)


def _proba(n: int, k: int) -> np.ndarray:
    raw = RNG.random((n, k))
    return raw / raw.sum(axis=1, keepdims=True)


ARRAYS = {
    "binary float32": _proba(1001, 2).astype(np.float32),
    "binary float64": _proba(513, 2),
    "p1 vector": RNG.random(300).astype(np.float32),
    "one column": RNG.random((77, 1)).astype(np.float16),
    "multiclass": _proba(250, 5).astype(np.float32),
    "big-endian": _proba(64, 3).astype(">f8"),
    "fortran": np.asfortranarray(_proba(99, 4)),
    "integers": RNG.integers(0, 2, size=(40, 2)).astype(np.int32),
    "empty": np.zeros((0, 2), dtype=np.float32),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_read_npy_gives_parse_npy_of_the_bytes(tmp_path, name):
    path = tmp_path / "predictions.npy"
    np.save(path, ARRAYS[name])
    want = parse_npy(path.read_bytes())
    got = read_npy(path, 64 << 20)
    assert got.dtype == want.dtype == np.float64 and got.shape == want.shape
    assert got.flags.writeable and np.array_equal(got, want)
    assert got.flags.c_contiguous == want.flags.c_contiguous


@pytest.mark.parametrize("cut", [1, 7, 200])
def test_read_npy_refuses_a_file_shorter_or_longer_than_its_header(tmp_path, cut):
    path = tmp_path / "predictions.npy"
    np.save(path, ARRAYS["binary float32"])
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    with pytest.raises(InvalidOutput, match="does not match its header"):
        read_npy(path, 64 << 20)
    path.write_bytes(data + b"\0" * cut)
    with pytest.raises(InvalidOutput, match="does not match its header"):
        read_npy(path, 64 << 20)


def _reference_class_probabilities(predictions, *, n_rows: int, n_classes: int) -> np.ndarray:
    """``metrics.class_probabilities`` as it was: every check on its own pass, always clipped."""
    p = np.asarray(predictions, dtype=np.float64)
    if n_classes == 2 and (p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1)):
        p1 = p.reshape(-1)
        p = np.stack([1.0 - p1, p1], axis=1)
    if p.shape != (n_rows, n_classes):
        raise metrics.InvalidPredictions("shape")
    if not np.all(np.isfinite(p)):
        raise metrics.InvalidPredictions("finite")
    if p.min(initial=0.0) < -1e-6 or p.max(initial=0.0) > 1 + 1e-6:
        raise metrics.InvalidPredictions("range")
    p = np.clip(p, 0.0, 1.0)
    sums = p.sum(axis=1)
    if n_rows and not np.all(np.abs(sums - 1.0) <= metrics.PROBABILITY_SUM_TOLERANCE):
        raise metrics.InvalidPredictions("sums")
    return p / sums[:, None]


def _cases():
    yield "binary", _proba(500, 2), 2
    yield "p1 vector", RNG.random(400), 2
    yield "multiclass", _proba(300, 4), 4
    yield "empty", np.zeros((0, 3)), 3
    edge = _proba(200, 2)
    edge[:5] = [[1.0 + 5e-7, -5e-7], [0.0, 1.0], [-0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]  # clipped by the tolerance
    yield "just outside [0, 1]", edge, 2
    sloppy = _proba(200, 3)
    sloppy[:, 0] += 4e-4  # rows summing to 1 within the tolerance: renormalised
    yield "sloppy sums", sloppy, 3
    for bad in (np.nan, np.inf, -np.inf, -1e-3, 1.01):
        broken = _proba(50, 2)
        broken[7, 1] = bad
        yield f"bad {bad}", broken, 2
    unsummed = _proba(50, 3)
    unsummed[3] *= 1.1
    yield "rows not summing to 1", unsummed, 3
    yield "wrong shape", _proba(50, 3), 2


@pytest.mark.parametrize("name, predictions, k", list(_cases()), ids=[c[0] for c in _cases()])
def test_class_probabilities_equal_the_reference_or_refuse_alike(name, predictions, k):
    n_rows = len(predictions)
    try:
        want = _reference_class_probabilities(predictions, n_rows=n_rows, n_classes=k)
    except metrics.InvalidPredictions:
        with pytest.raises(metrics.InvalidPredictions):
            metrics.class_probabilities(predictions, n_rows=n_rows, n_classes=k)
        return
    got = metrics.class_probabilities(predictions, n_rows=n_rows, n_classes=k)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)
    assert not np.shares_memory(got, predictions)  # the caller's array is never changed


def test_the_loaded_and_normalised_predictions_are_those_of_the_plain_path(tmp_path):
    # The whole read-back of a binary job (what the agent calls), fast path against plain numpy.
    out = tmp_path / "out"
    out.mkdir()
    written = _proba(10_000, 2).astype(np.float32)
    np.save(out / "predictions.npy", written)
    raw = load_predictions(out, n_rows=10_000, task_type="binary_classification", n_classes=2, max_bytes=64 << 20)
    got = metrics.class_probabilities(raw, n_rows=10_000, n_classes=2)
    want = _reference_class_probabilities(written.astype(np.float64), n_rows=10_000, n_classes=2)
    assert np.array_equal(got, want)
