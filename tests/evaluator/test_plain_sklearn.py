"""Linear scikit-learn models read without scikit-learn (``evaluator/runner/plain_sklearn.py``):
the same predictions as scikit-learn for every supported estimator and file form, no pickle code
run for anything else, and the runner's first job predicting every row with the checked form."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from evaluator.runner.compiled import TOLERANCE, Unsupported, plain_form, predict_compiled
from evaluator.runner.errors import RunnerError
from evaluator.runner.plain_sklearn import NotPlain, read_plain
from evaluator.runner.predict import run_predict
from tests.evaluator.test_compiled_models import CASES, N_FEATURES, Y_BINARY, X, fitted

REPO = Path(__file__).resolve().parents[2]


def sklearn_output(estimator, proba: bool, rows: np.ndarray) -> np.ndarray:
    return (estimator.predict_proba(rows) if proba else estimator.predict(rows)).astype(np.float32)


def dumped(tmp_path: Path, estimator, how: str = "joblib") -> Path:
    path = tmp_path / "model.joblib"
    if how == "joblib":
        joblib.dump(estimator, path)
    elif how == "joblib, compressed":
        joblib.dump(estimator, path, compress=3)
    else:
        with open(path, "wb") as fh:
            pickle.dump(estimator, fh, protocol=int(how.rsplit(" ", 1)[1]))
    return path


@pytest.mark.parametrize("how", ["joblib", "joblib, compressed", "pickle 2", "pickle 5"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_the_plain_read_predicts_what_sklearn_predicts(tmp_path, name, how):
    estimator, proba = fitted(name)
    root = read_plain(dumped(tmp_path, estimator, how), n_features=N_FEATURES)
    spec, tensors, _ = plain_form(root, probe=X[:100], n_features=N_FEATURES)
    got = predict_compiled(spec, tensors, X).astype(np.float32)
    want = sklearn_output(estimator, proba, X)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= TOLERANCE


class RunsCode:
    """A pickle that runs a command when it is loaded (the classic hostile artifact)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _with_state(estimator, **state):
    estimator.__dict__.update(state)
    return estimator


NOT_PLAIN = {
    "code run on load": lambda tmp: _with_state(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y_BINARY),
                                                extra=RunsCode(tmp / "ran")),
    "a tree": lambda tmp: RandomForestClassifier(n_estimators=2).fit(X, Y_BINARY),
    "fitted on other features": lambda tmp: LogisticRegression().fit(X[:, :3], Y_BINARY),
    "an object array (feature names)": lambda tmp: _with_state(
        LogisticRegression().fit(X, Y_BINARY), feature_names_in_=np.array([f"f{i}" for i in range(N_FEATURES)], dtype=object)),
    "not an estimator": lambda tmp: {"coef_": np.ones(3)},
    "a state claiming another class": lambda tmp: _with_state(
        LogisticRegression().fit(X, Y_BINARY), sklearn_class=("sklearn.pipeline", "Pipeline")),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(NOT_PLAIN))
def test_anything_else_is_not_plain_and_runs_no_code(tmp_path, case):
    with pytest.raises(NotPlain):
        read_plain(dumped(tmp_path, NOT_PLAIN[case](tmp_path)), n_features=N_FEATURES)
    assert not (tmp_path / "ran").exists(), "a refused pickle ran its code"


def test_a_pickle_of_another_scikit_learn_version_is_not_plain(tmp_path):
    path = dumped(tmp_path, fitted("scaler + logistic, binary (the example)")[0])
    version = sklearn.__version__.encode()
    other = b"0" * len(version)  # the same length: the pickle stays well formed
    path.write_bytes(path.read_bytes().replace(version, other))
    with pytest.raises(NotPlain, match="version"):
        read_plain(path, n_features=N_FEATURES)


def test_a_truncated_or_garbage_file_is_not_plain(tmp_path):
    path = dumped(tmp_path, fitted("scaler + logistic, binary (the example)")[0])
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(NotPlain):
        read_plain(path, n_features=N_FEATURES)
    path.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(NotPlain):
        read_plain(path, n_features=N_FEATURES)


def test_coefficients_that_do_not_fit_the_classes_are_not_converted(tmp_path):
    model = LogisticRegression().fit(X, Y_BINARY)
    model.coef_ = np.ones((3, N_FEATURES))  # three rows for two classes: scikit-learn would normalise OvR
    root = read_plain(dumped(tmp_path, model), n_features=N_FEATURES)
    with pytest.raises(Unsupported, match="classes"):
        plain_form(root, probe=X[:10], n_features=N_FEATURES)


def test_a_state_without_a_fitted_attribute_is_not_converted_and_the_job_fails_as_scikit_learn_says(tmp_path):
    model = LogisticRegression().fit(X, Y_BINARY)
    del model.coef_
    path = dumped(tmp_path, model)
    with pytest.raises(Unsupported, match="does not convert"):
        plain_form(read_plain(path, n_features=N_FEATURES), probe=X[:10], n_features=N_FEATURES)
    with pytest.raises(RunnerError, match="predict failed: the model's code raised AttributeError"):
        _run(tmp_path, path)


def _run(tmp_path: Path, model: Path, compile_to: bool = True) -> tuple[np.ndarray, Path]:
    features = tmp_path / "features.npy"
    np.save(features, X)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    folder = out / "compiled"
    run_predict(model_format="sklearn", model_path=model, features_path=features, output_path=out / "predictions.npy",
                batch_size=512, compile_to=folder if compile_to else None)  # fmt: skip
    return np.load(out / "predictions.npy"), folder


def test_the_first_job_predicts_every_row_with_the_form_and_writes_it(tmp_path):
    estimator, proba = fitted("minmax(clip) + logistic, 3 classes")
    predictions, folder = _run(tmp_path, dumped(tmp_path, estimator))
    assert np.max(np.abs(predictions - sklearn_output(estimator, proba, X))) <= TOLERANCE
    assert json.loads((folder / "spec.json").read_text())["head"]["op"] == "logistic_softmax"


def test_a_model_the_plain_reader_refuses_is_loaded_and_checked_on_its_first_batch(tmp_path):
    # Feature names make an object array: scikit-learn loads it; the form is checked on the first
    # batch, then predicts the rest. copy=False: the scaler scales the runner's batch in place.
    model = make_pipeline(StandardScaler(copy=False), LogisticRegression()).fit(X, Y_BINARY)
    model.steps[0][1].feature_names_in_ = np.array([f"f{i}" for i in range(N_FEATURES)], dtype=object)
    predictions, folder = _run(tmp_path, dumped(tmp_path, model))
    model.steps[0][1].__dict__.pop("feature_names_in_")
    assert np.max(np.abs(predictions - model.predict_proba(X.copy()).astype(np.float32))) <= TOLERANCE
    assert folder.is_dir()


def test_a_model_without_a_form_keeps_scikit_learns_predictions(tmp_path):
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, Y_BINARY)
    predictions, folder = _run(tmp_path, dumped(tmp_path, model))
    assert np.array_equal(predictions, model.predict_proba(X).astype(np.float32))
    assert not folder.exists()


def test_a_plain_job_imports_neither_scikit_learn_nor_joblibs_package(tmp_path):
    """In a fresh interpreter, as in a sandbox: the whole job, then what was imported."""
    estimator, _ = fitted("scaler + logistic, binary (the example)")
    dumped(tmp_path, estimator)
    np.save(tmp_path / "features.npy", X)
    (tmp_path / "out").mkdir()
    script = (
        "import sys; from pathlib import Path; from evaluator.runner.predict import run_predict; "
        f"t = Path({str(tmp_path)!r}); "
        "run_predict(model_format='sklearn', model_path=t / 'model.joblib', features_path=t / 'features.npy', "
        "output_path=t / 'out' / 'predictions.npy', batch_size=512, compile_to=t / 'out' / 'compiled'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy', 'joblib')))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert "read without scikit-learn" in done.stderr
    assert np.max(np.abs(np.load(tmp_path / "out" / "predictions.npy") - estimator.predict_proba(X))) <= TOLERANCE
