"""Every bad thing a sandbox can leave in /out is refused by load_predictions."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from evaluator.outputs import load_predictions
from evaluator.sandbox import InvalidOutput

N = 10
MAX = 1024 * 1024


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def write(out_dir, array, name="predictions.npy"):
    np.save(out_dir / name, array, allow_pickle=False)
    return out_dir / name


def load(out_dir, *, task_type="binary_classification", n_classes=2, n_rows=N, max_bytes=MAX):
    return load_predictions(
        out_dir, n_rows=n_rows, task_type=task_type, n_classes=n_classes, max_bytes=max_bytes
    )


def probs(n=N, k=2):
    p = np.random.default_rng(0).random((n, k)).astype(np.float32)
    return p / p.sum(axis=1, keepdims=True)


# --- accepted -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(N, 2), (N,), (N, 1)])
def test_binary_shapes_accepted(out_dir, shape):
    array = probs() if shape == (N, 2) else np.full(shape, 0.3, dtype=np.float32)
    write(out_dir, array)
    result = load(out_dir)
    assert result.shape == shape
    assert result.dtype == np.float64


def test_multiclass_accepted(out_dir):
    write(out_dir, probs(k=3))
    assert load(out_dir, task_type="multiclass_classification", n_classes=3).shape == (N, 3)


@pytest.mark.parametrize("shape", [(N,), (N, 1)])
def test_regression_accepted_with_any_finite_values(out_dir, shape):
    write(out_dir, np.full(shape, -1234.5, dtype=np.float32))
    assert load(out_dir, task_type="regression", n_classes=None).shape == shape


def test_integer_and_fortran_order_accepted(out_dir):
    write(out_dir, np.asfortranarray(np.tile(np.array([[0, 1]], dtype=np.int64), (N, 1))))
    np.testing.assert_array_equal(load(out_dir)[:, 1], np.ones(N))


# --- refused: the content ---------------------------------------------------------------


@pytest.mark.parametrize(
    "task_type,n_classes,shape",
    [
        ("binary_classification", 2, (N, 3)),
        ("binary_classification", 2, (N, 2, 1)),
        ("multiclass_classification", 3, (N, 2)),
        ("multiclass_classification", 3, (N,)),
        ("regression", None, (N, 2)),
    ],
)
def test_wrong_shape(out_dir, task_type, n_classes, shape):
    write(out_dir, np.full(shape, 1.0 / shape[-1], dtype=np.float32))
    with pytest.raises(InvalidOutput):
        load(out_dir, task_type=task_type, n_classes=n_classes)


@pytest.mark.parametrize("rows", [N - 1, N + 1, 0])
def test_wrong_row_count(out_dir, rows):
    write(out_dir, probs(n=rows) if rows else np.zeros((0, 2), dtype=np.float32))
    with pytest.raises(InvalidOutput):
        load(out_dir)


def test_scalar_refused(out_dir):
    write(out_dir, np.float32(0.5))
    with pytest.raises(InvalidOutput):
        load(out_dir)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(out_dir, bad):
    array = np.zeros(N, dtype=np.float32)
    array[3] = bad
    write(out_dir, array)
    with pytest.raises(InvalidOutput):
        load(out_dir, task_type="regression", n_classes=None)


@pytest.mark.parametrize("value", [-0.1, 1.1])
def test_probability_out_of_range(out_dir, value):
    write(out_dir, np.full(N, value, dtype=np.float32))
    with pytest.raises(InvalidOutput):
        load(out_dir)


def test_probability_rows_must_sum_to_one(out_dir):
    write(out_dir, np.full((N, 3), 0.5, dtype=np.float32))
    with pytest.raises(InvalidOutput):
        load(out_dir, task_type="multiclass_classification", n_classes=3)


@pytest.mark.parametrize(
    "array",
    [
        np.array(["a"] * N),
        np.zeros(N, dtype=np.complex64),
        np.zeros(N, dtype=[("a", "<f4")]),
        np.zeros(N, dtype="datetime64[s]"),
        np.zeros(N, dtype=bool),
    ],
)
def test_non_numeric_dtypes(out_dir, array):
    write(out_dir, array)
    with pytest.raises(InvalidOutput):
        load(out_dir, task_type="regression", n_classes=None)


def test_pickled_object_array_is_never_unpickled(out_dir, tmp_path):
    marker = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    array = np.empty(N, dtype=object)
    array[:] = [Boom() for _ in range(N)]
    np.save(out_dir / "predictions.npy", array, allow_pickle=True)
    with pytest.raises(InvalidOutput):
        load(out_dir, task_type="regression", n_classes=None)
    assert not marker.exists()


def test_plain_pickle_is_refused(out_dir, tmp_path):
    (out_dir / "predictions.npy").write_bytes(pickle.dumps(np.zeros(N)))
    with pytest.raises(InvalidOutput):
        load(out_dir, task_type="regression", n_classes=None)


def test_npz_is_refused(out_dir):
    with open(out_dir / "predictions.npy", "wb") as fh:
        np.savez(fh, a=np.zeros(N))
    with pytest.raises(InvalidOutput):
        load(out_dir, task_type="regression", n_classes=None)


def test_header_that_lies_about_the_shape(out_dir):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    (out_dir / "predictions.npy").write_bytes(buf.getvalue() + b"\0" * 40)
    with pytest.raises(InvalidOutput):
        load(out_dir, task_type="regression", n_classes=None, n_rows=10**12)


def test_truncated_file(out_dir):
    path = write(out_dir, probs())
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(InvalidOutput):
        load(out_dir)


def test_garbage(out_dir):
    (out_dir / "predictions.npy").write_bytes(os.urandom(200))
    with pytest.raises(InvalidOutput):
        load(out_dir)


# --- refused: the file itself -----------------------------------------------------------


def test_missing_file(out_dir):
    with pytest.raises(InvalidOutput):
        load(out_dir)


def test_oversized_file_refused_before_reading(out_dir):
    write(out_dir, np.zeros(100_000, dtype=np.float32))
    with pytest.raises(InvalidOutput):
        load(out_dir, task_type="regression", n_classes=None, n_rows=100_000, max_bytes=1000)


def test_sparse_oversized_file(out_dir):
    with open(out_dir / "predictions.npy", "wb") as fh:
        fh.truncate(10 * MAX)
    with pytest.raises(InvalidOutput):
        load(out_dir)


def test_symlink_to_a_valid_file(out_dir, tmp_path):
    target = tmp_path / "elsewhere.npy"
    np.save(target, probs())
    (out_dir / "predictions.npy").symlink_to(target)
    with pytest.raises(InvalidOutput):
        load(out_dir)


def test_symlink_to_a_site_secret(out_dir):
    (out_dir / "predictions.npy").symlink_to("/etc/shadow")
    with pytest.raises(InvalidOutput):
        load(out_dir)


def test_fifo_does_not_hang(out_dir):
    os.mkfifo(out_dir / "predictions.npy")
    with pytest.raises(InvalidOutput):
        load(out_dir)


def test_directory_in_place_of_the_file(out_dir):
    (out_dir / "predictions.npy").mkdir()
    with pytest.raises(InvalidOutput):
        load(out_dir)


def test_hard_link(out_dir, tmp_path):
    path = write(out_dir, probs())
    os.link(path, tmp_path / "second-name")
    with pytest.raises(InvalidOutput):
        load(out_dir)


@pytest.mark.parametrize("extra", ["other.npy", ".hidden", "predictions.npy.tmp"])
def test_extra_files(out_dir, extra):
    write(out_dir, probs())
    (out_dir / extra).write_bytes(b"")
    with pytest.raises(InvalidOutput):
        load(out_dir)


def test_extra_directory(out_dir):
    write(out_dir, probs())
    (out_dir / "sub").mkdir()
    with pytest.raises(InvalidOutput):
        load(out_dir)


def test_wrong_name_only(out_dir):
    write(out_dir, probs(), name="preds.npy")
    with pytest.raises(InvalidOutput):
        load(out_dir)


def test_out_dir_that_is_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    write(real, probs())
    link = tmp_path / "out"
    link.symlink_to(real)
    with pytest.raises(InvalidOutput):
        load(link)


def test_the_fast_finiteness_and_row_sum_checks_agree_with_numpys_plain_ones():
    from evaluator.metrics import all_finite, row_sums

    rng = np.random.default_rng(3)
    for shape in [(0,), (0, 2), (5,), (7, 1), (1000, 2), (100, 3)]:
        base = rng.random(shape)
        cases = [base]
        if base.size:
            for bad in (np.nan, np.inf, -np.inf):
                broken = base.copy()
                broken.flat[rng.integers(base.size)] = bad
                cases.append(broken)
        for array in cases + [c.astype(np.float32) for c in cases]:
            assert all_finite(array) == bool(np.all(np.isfinite(array)))
            if array.ndim == 2 and array.shape[1] >= 2:
                np.testing.assert_array_equal(row_sums(array), array.sum(axis=1))
    assert all_finite(np.arange(5))
