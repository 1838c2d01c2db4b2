"""Compiled (numpy-only) scikit-learn models: the same predictions as scikit-learn, and the
host refusing anything but a well-formed form (no engine: conversion and checks in-process)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from evaluator import compiled_models, sandbox
from evaluator.compiled_models import CompiledCache, CompiledRefused
from evaluator.runner import compiled
from evaluator.runner.compiled import (
    TOLERANCE,
    FormDiffers,
    Unsupported,
    checked_form,
    convert,
    predict_compiled,
    write_compiled,
)

N_FEATURES = 7
RNG = np.random.default_rng(0)
X = (RNG.normal(size=(3000, N_FEATURES)) * 3 + 1).astype(np.float32)
Y_BINARY = (X[:, 0] + X[:, 1] > 2).astype(int)
Y_MULTI = (X[:, 0] > 1).astype(int) + (X[:, 2] > 1)
Y_REAL = X @ RNG.normal(size=N_FEATURES) + 0.5


class MyScaler(StandardScaler):
    def transform(self, X, copy=None):  # a subclass may do anything: not converted
        return super().transform(X, copy=copy) * 2


CASES = {
    "scaler + logistic, binary (the example)": (make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), Y_BINARY, True),
    "minmax(clip) + logistic, 3 classes": (make_pipeline(MinMaxScaler(clip=True), LogisticRegression(max_iter=500)), Y_MULTI, True),
    "maxabs + scaler without mean + logistic": (
        make_pipeline(MaxAbsScaler(), StandardScaler(with_mean=False), LogisticRegression(max_iter=500)), Y_MULTI, True,
    ),
    "logistic alone": (LogisticRegression(max_iter=500), Y_BINARY, True),
    "passthrough + scaler + ridge": (make_pipeline("passthrough", StandardScaler(), Ridge()), Y_REAL, False),
    "linear regression": (LinearRegression(), Y_REAL, False),
    "linear regression, two targets": (LinearRegression(), np.stack([Y_REAL, -Y_REAL], 1), False),
    "linear regression without intercept": (LinearRegression(fit_intercept=False), Y_REAL, False),
    "lasso": (Lasso(alpha=0.01), Y_REAL, False),
    "elastic net": (ElasticNet(alpha=0.01), Y_REAL, False),
}  # fmt: skip


def fitted(name: str):
    estimator, y, proba = CASES[name]
    estimator.fit(X, y)
    return estimator, proba


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_compiled_form_predicts_what_sklearn_predicts(name):
    estimator, proba = fitted(name)
    want = (estimator.predict_proba(X) if proba else estimator.predict(X)).astype(np.float32)
    spec, tensors = convert(estimator, uses_proba=proba, n_features=N_FEATURES)
    got = predict_compiled(spec, tensors, X).astype(np.float32)
    assert got.shape == want.shape
    # Identical but for the logistic function's last bit (numpy's exp vs scipy's expit).
    assert np.max(np.abs(got - want)) <= TOLERANCE
    if spec["head"]["op"] != "logistic_binary":
        assert np.array_equal(got, want)


@pytest.mark.parametrize(
    "estimator",
    [DecisionTreeClassifier().fit(X, Y_BINARY), make_pipeline(MyScaler(), LogisticRegression()).fit(X, Y_BINARY)],
    ids=["tree", "subclassed scaler"],
)
def test_other_estimators_have_no_compiled_form(estimator):
    with pytest.raises(Unsupported):
        convert(estimator, uses_proba=True, n_features=N_FEATURES)
    with pytest.raises(Unsupported):
        checked_form(estimator, uses_proba=True, sample=X[:512], predictions=estimator.predict_proba(X[:512]).astype(np.float32),
                     n_features=N_FEATURES)  # fmt: skip


def test_a_conversion_that_disagrees_with_the_estimator_on_the_sample_is_refused():
    estimator, _ = fitted("scaler + logistic, binary (the example)")
    wrong = estimator.predict_proba(X[:512]).astype(np.float32)
    wrong[17, 0] += 0.01
    with pytest.raises(FormDiffers):
        checked_form(estimator, uses_proba=True, sample=X[:512], predictions=wrong, n_features=N_FEATURES)


def converted(tmp_path: Path, name: str = "minmax(clip) + logistic, 3 classes") -> Path:
    estimator, proba = fitted(name)
    sample = X[:1000]
    predictions = (estimator.predict_proba(sample) if proba else estimator.predict(sample)).astype(np.float32)
    folder = tmp_path / "out" / "compiled"
    folder.parent.mkdir(parents=True)
    spec, _, weights = checked_form(estimator, uses_proba=proba, sample=sample, predictions=predictions, n_features=N_FEATURES)
    write_compiled(folder, spec, weights)
    return folder


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_host_accepts_the_runners_form_and_its_own_copy_predicts_the_same(tmp_path, name):
    estimator, proba = fitted(name)
    folder = converted(tmp_path, name)
    spec, tensors = compiled_models.read(folder, n_features=N_FEATURES)
    compiled_models.write(tmp_path / "kept", spec, tensors)
    assert oct((tmp_path / "kept").stat().st_mode & 0o777) == "0o755"
    again = compiled.read_compiled(tmp_path / "kept")
    want = (estimator.predict_proba(X) if proba else estimator.predict(X)).astype(np.float32)
    assert np.max(np.abs(predict_compiled(*again, X).astype(np.float32) - want)) <= TOLERANCE


def _rewrite(folder: Path, spec=None, tensors=None) -> None:
    old_spec, old_tensors = compiled.read_compiled(folder)
    (folder / "spec.json").write_text(json.dumps(old_spec if spec is None else spec(old_spec)))
    (folder / "weights.safetensors").write_bytes(save(old_tensors if tensors is None else tensors(old_tensors)))


def _with(mapping: dict, **changes) -> dict:
    return {**mapping, **changes}


HOSTILE = {
    "an op not on the allow-list": lambda f: _rewrite(f, spec=lambda s: _with(s, head=_with(s["head"], op="exec"))),
    "an unknown field": lambda f: _rewrite(f, spec=lambda s: _with(s, steps=[_with(s["steps"][0], code="rm -rf")])),
    "another feature count": lambda f: _rewrite(f, spec=lambda s: _with(s, n_features=N_FEATURES + 1)),
    "another version": lambda f: _rewrite(f, spec=lambda s: _with(s, version=99)),
    "a tensor of the wrong shape": lambda f: _rewrite(f, tensors=lambda t: _with(t, **{"head.coef": np.ones((3, 2))})),
    "a non-finite tensor": lambda f: _rewrite(f, tensors=lambda t: _with(t, **{"0.scale": np.full(N_FEATURES, np.nan)})),
    "an integer tensor": lambda f: _rewrite(f, tensors=lambda t: _with(t, **{"0.scale": np.ones(N_FEATURES, np.int64)})),
    "a tensor nobody uses": lambda f: _rewrite(f, tensors=lambda t: _with(t, extra=np.ones(3))),
    "a missing tensor": lambda f: _rewrite(f, tensors=lambda t: {k: v for k, v in t.items() if k != "0.min"}),
    "clip not a boolean": lambda f: _rewrite(f, spec=lambda s: _with(s, steps=[_with(s["steps"][0], clip="yes")])),
    "too many steps": lambda f: _rewrite(f, spec=lambda s: _with(s, steps=s["steps"] * 9)),
    "a binary head with 3 classes": lambda f: _rewrite(f, spec=lambda s: _with(s, head=_with(s["head"], op="logistic_binary"))),
    "not JSON": lambda f: (f / "spec.json").write_bytes(b"\x80not json"),
    "not safetensors": lambda f: (f / "weights.safetensors").write_bytes(b"\x00" * 64),
    "a spec past its cap": lambda f: (f / "spec.json").write_bytes(b" " * (compiled.MAX_SPEC_BYTES + 1)),
    "an extra file": lambda f: (f / "notes.txt").write_text("hi"),
    "a symlink for the spec": lambda f: ((f / "spec.json").unlink(), (f / "spec.json").symlink_to("/etc/passwd")),
    "a hard link for the weights": lambda f: ((f / "weights.safetensors").unlink(), os.link(f / "spec.json", f / "weights.safetensors")),
    "a FIFO for the spec": lambda f: ((f / "spec.json").unlink(), os.mkfifo(f / "spec.json")),
    "a folder for the spec": lambda f: ((f / "spec.json").unlink(), (f / "spec.json").mkdir()),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_form_is_refused_cleanly_and_removed(tmp_path, case):
    folder = converted(tmp_path)
    HOSTILE[case](folder)
    with pytest.raises(CompiledRefused):
        compiled_models.read(folder, n_features=N_FEATURES)
    cache = CompiledCache(tmp_path / "cache")
    assert cache.store("k", folder, n_features=N_FEATURES) is False
    assert not os.path.lexists(folder) and cache.get("k") is None


def test_a_symlinked_folder_is_refused_and_what_it_points_to_is_left_alone(tmp_path):
    target = converted(tmp_path)
    link = tmp_path / "out" / "link"
    link.symlink_to(target)
    cache = CompiledCache(tmp_path / "cache")
    assert cache.store("k", link, n_features=N_FEATURES) is False
    assert target.is_dir() and sorted(os.listdir(target)) == ["spec.json", "weights.safetensors"]


def test_the_cache_keys_on_the_artifact_the_shard_file_and_the_image(tmp_path):
    model = tmp_path / "model.joblib"
    model.write_bytes(b"model bytes")
    features = tmp_path / "features.npy"
    np.save(features, X)
    other = tmp_path / "other.npy"
    np.save(other, X)  # the same rows in another file: another shard as far as the cache knows
    key = CompiledCache.key(model_path=model, features_path=features, image_id="sha256:a")
    assert key == CompiledCache.key(model_path=model, features_path=features, image_id="sha256:a")
    assert key != CompiledCache.key(model_path=model, features_path=other, image_id="sha256:a")
    assert key != CompiledCache.key(model_path=model, features_path=features, image_id="sha256:b")
    model.write_bytes(b"other model")
    assert key != CompiledCache.key(model_path=model, features_path=features, image_id="sha256:a")
    assert compiled_models.n_features_of(features) == N_FEATURES


def test_the_cache_keeps_a_bounded_number_of_forms(tmp_path):
    cache = CompiledCache(tmp_path / "cache", max_entries=2)
    for i in range(3):
        assert cache.store(f"k{i}", converted(tmp_path / f"t{i}"), n_features=N_FEATURES)
    assert cache.get("k0") is None and cache.get("k1") is not None and cache.get("k2") is not None
    assert len(os.listdir(tmp_path / "cache")) == 2


def test_compiled_is_a_runner_format_but_never_a_job_format(tmp_path):
    assert "compiled" in sandbox.RUNNER_FORMATS and "compiled" not in sandbox.MODEL_FORMATS
    limits = sandbox.Limits(memory_mb=512, cpus=1.0, timeout_seconds=60, max_output_mb=8)
    common = dict(image_id="sha256:x", features_path=tmp_path / "f.npy", out_dir=tmp_path / "out", limits=limits)
    config = sandbox.container_config(model_path=tmp_path / "m", model_format="compiled", **common)
    assert config["command"][:3] == ["predict", "--format", "compiled"] and "--compile-to" not in config["command"]
    asked = sandbox.container_config(model_path=tmp_path / "m", model_format="sklearn", compile_model=True, **common)
    assert asked["command"][-2:] == ["--compile-to", "/out/compiled"]
    plain = sandbox.container_config(model_path=tmp_path / "m", model_format="sklearn", **common)
    assert "--compile-to" not in plain["command"]
    same = {k: v for k, v in asked.items() if k not in ("command", "name")}
    assert same == {k: v for k, v in plain.items() if k not in ("command", "name")}
