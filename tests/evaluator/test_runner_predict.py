"""The runner's prediction path in-process (no engine): features streamed from the file in
batches, predictions placed into one array, compared with the reference the runner used to
compute (every row loaded, each batch predicted, the parts concatenated)."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from evaluator.runner.errors import EXIT_CONTRACT, EXIT_INPUT, RunnerError
from evaluator.runner.loaders import load_sklearn
from evaluator.runner.predict import FeatureFile, predict_batches, run_predict

RNG = np.random.default_rng(3)
X = (RNG.normal(size=(1000, 6)) * 2 + 1).astype(np.float32)
Y = (X[:, 0] - X[:, 3] > 0).astype(int)
MODEL = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, Y)


@pytest.fixture(autouse=True)
def _sklearn_config():
    """load_sklearn sets scikit-learn's assume_finite for the (one-job) runner process: undo it
    here so that the other tests of this process see scikit-learn's defaults."""
    saved = sklearn.get_config()
    yield
    sklearn.set_config(**saved)


def reference(predict, features: np.ndarray, batch_size: int) -> np.ndarray:
    """What the runner wrote before streaming: np.load, a batch per slice, concatenate."""
    parts = []
    for start in range(0, features.shape[0], batch_size):
        batch = np.ascontiguousarray(features[start : start + batch_size], dtype=np.float32)
        parts.append(np.asarray(predict(batch)).astype(np.float32, copy=False))
    return np.concatenate(parts, axis=0)


def saved(tmp_path: Path, array: np.ndarray, name: str = "features.npy") -> Path:
    path = tmp_path / name
    np.save(path, array)
    return path


def streamed(path: Path, predict, batch_size: int) -> np.ndarray:
    features = FeatureFile(path)
    try:
        return predict_batches(predict, features.batches(batch_size), features.n_rows)
    finally:
        features.close()


@pytest.mark.parametrize("batch_size", [1, 7, 256, 1000, 4096])
@pytest.mark.parametrize(
    "stored",
    [
        X,
        X.astype(np.float64),
        X.astype(">f4"),  # big-endian
        np.asfortranarray(X),
        (X * 100).astype(np.int32),
    ],
    ids=["float32", "float64", "big-endian", "fortran", "int32"],
)
def test_streamed_predictions_equal_the_reference_bit_for_bit(tmp_path, stored, batch_size):
    path = saved(tmp_path, stored)
    want = reference(MODEL.predict_proba, np.load(path), batch_size)
    got = streamed(path, MODEL.predict_proba, batch_size)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got, want)


def test_a_model_returning_or_changing_its_input_gets_each_batch_once(tmp_path):
    path = saved(tmp_path, X)

    def identity(batch):
        return batch  # a view of the reused buffer: it must be copied out before the next read

    def scribble(batch):
        out = batch[:, :2].copy()
        batch[:] = -1.0  # in place, on the buffer the next batch is read into
        return out

    assert np.array_equal(streamed(path, identity, 64), X)
    assert np.array_equal(streamed(path, scribble, 64), X[:, :2])


def test_one_dimensional_predictions_keep_their_shape(tmp_path):
    path = saved(tmp_path, X)
    got = streamed(path, lambda b: MODEL.predict_proba(b)[:, 1], 300)
    assert got.shape == (1000,) and np.array_equal(got, reference(lambda b: MODEL.predict_proba(b)[:, 1], X, 300))


def test_batches_of_different_shapes_break_the_contract(tmp_path):
    path = saved(tmp_path, X)
    calls = []

    def drifting(batch):
        calls.append(1)
        return np.zeros((len(batch), 2 if len(calls) == 1 else 3))

    with pytest.raises(RunnerError) as caught:
        streamed(path, drifting, 400)
    assert caught.value.exit_code == EXIT_CONTRACT and "different shapes" in str(caught.value)


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda p: np.save(p, X[:, 0]), "2-D"),
        (lambda p: np.save(p, np.array([["a", "b"]])), "not numeric"),
        (lambda p: p.write_bytes(b"not an npy file at all"), "cannot read features"),
        (lambda p: p.write_bytes(_npy_bytes(p, X)[:-5]), "does not match"),
        (lambda p: p.write_bytes(_npy_bytes(p, X) + b"extra"), "does not match"),
    ],
    ids=["1-D", "strings", "garbage", "truncated", "trailing bytes"],
)
def test_unreadable_features_exit_as_input_errors(tmp_path, content, message):
    path = tmp_path / "features.npy"
    content(path)
    with pytest.raises(RunnerError) as caught:
        FeatureFile(path)
    assert caught.value.exit_code == EXIT_INPUT and message in str(caught.value)


def _npy_bytes(path: Path, array: np.ndarray) -> bytes:
    np.save(path, array)
    return path.read_bytes()


def test_no_rows_is_an_input_error(tmp_path):
    path = saved(tmp_path, np.zeros((0, 6), dtype=np.float32))
    with pytest.raises(RunnerError) as caught:
        streamed(path, MODEL.predict_proba, 64)
    assert caught.value.exit_code == EXIT_INPUT and "no rows" in str(caught.value)


def test_run_predict_writes_the_reference_predictions_of_a_joblib_model(tmp_path):
    features = saved(tmp_path, X)
    model = tmp_path / "model.joblib"
    joblib.dump(MODEL, model)
    out = tmp_path / "predictions.npy"
    run_predict(model_format="sklearn", model_path=model, features_path=features, output_path=out, batch_size=333)
    written = np.load(out, allow_pickle=False)
    assert written.dtype == np.float32 and np.array_equal(written, reference(MODEL.predict_proba, X, 333))


def test_the_loaded_sklearn_model_skips_only_the_repeated_finiteness_scan(tmp_path):
    model = tmp_path / "model.joblib"
    joblib.dump(MODEL, model)
    predict = load_sklearn(model)
    assert sklearn.get_config()["assume_finite"] is True
    assert np.array_equal(predict(X), MODEL.predict_proba(X))  # finite rows: the same predictions
