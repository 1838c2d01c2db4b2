"""A numpy-only form of common scikit-learn models: converted once, predicted without sklearn.

Importing scikit-learn costs a fresh interpreter about a second of CPU; numpy alone about a
tenth of that. For the estimators below the prediction is a few numpy operations on a handful
of arrays, so the first job of an artifact (in its sandbox, where the pickle may be loaded)
writes those arrays (``weights.safetensors``) and a small spec (``spec.json``); later jobs of
the same artifact on the same shard run ``predict_compiled`` in a fresh sandbox that imports
numpy only. The operations are scikit-learn's own, in the same order and dtypes (float32
features, float64 parameters where sklearn keeps them), so the results are the same up to
rounding of the logistic function (``TOLERANCE``).

The first job predicts with the form too, once it has one: all its rows but the first batch
would otherwise be predicted twice (scikit-learn's per-batch overhead, then the check). Either
the pickle holds only these classes and is read without scikit-learn at all (``plain_sklearn``:
no pickle code runs, scikit-learn is not imported), or it is loaded as always and the form is
checked against the estimator's own predictions on the job's first batch (``checked_form``).

Supported (exact classes only: a subclass may change what ``transform`` does):
``Pipeline`` of ``StandardScaler`` / ``MinMaxScaler`` / ``MaxAbsScaler`` / ``"passthrough"``
steps ending in ``LogisticRegression`` (binary: expit; multiclass: softmax) or a linear
regressor (``LinearRegression``, ``Ridge``, ``Lasso``, ``ElasticNet``); or such an estimator
alone. Anything else is ``Unsupported`` and keeps the normal path.

Nothing here is a security boundary: vendor code may have run in this process before the
conversion, so the host treats what is written as untrusted data (``evaluator.compiled_models``).
This module imports only the standard library and numpy at module level.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

SPEC_NAME = "spec.json"
WEIGHTS_NAME = "weights.safetensors"
VERSION = 1
TOLERANCE = 1e-6  # max |compiled - sklearn| over every output value (float32 outputs)
MAX_SPEC_BYTES = 64 * 1024
MAX_WEIGHTS_BYTES = 8 * 1024 * 1024

# op -> (tensor fields, other fields). The host checks a spec against exactly this table.
STEP_OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "standard_scaler": (("mean", "scale"), ()),  # either tensor may be absent (with_mean/with_std)
    "minmax_scaler": (("scale", "min"), ("clip", "low", "high")),
    "maxabs_scaler": (("scale",), ("clip",)),
}
HEAD_OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "logistic_binary": (("coef", "intercept"), ()),
    "logistic_softmax": (("coef", "intercept"), ()),
    "linear": (("coef", "intercept"), ()),
}
LINEAR_REGRESSORS = ("LinearRegression", "Ridge", "Lasso", "ElasticNet")


class Unsupported(Exception):
    """The estimator has no compiled form; the job keeps the normal path."""


# --- conversion (in the first job's sandbox, where sklearn is imported) --------------------------


def _exact(obj: Any, module: str, names: tuple[str, ...]) -> str | None:
    """The class name of ``obj`` when it is one of ``names`` from ``module``: a scikit-learn
    estimator, or the stand-in ``plain_sklearn`` read from a pickle in its place."""
    cls = type(obj)
    origin = getattr(cls, "sklearn_class", None)
    cls_module, cls_name = origin if isinstance(origin, tuple) else (cls.__module__, cls.__name__)
    return cls_name if cls_module.startswith(module) and cls_name in names else None


def _array(value: Any) -> np.ndarray:
    array = np.array(value, copy=True, order="C")  # safetensors stores C order: a Fortran copy would scramble
    if array.dtype not in (np.float32, np.float64):
        raise Unsupported(f"parameter dtype {array.dtype}")
    return array


def _step(index: int, step: Any, tensors: dict[str, np.ndarray]) -> dict[str, Any] | None:
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return None
    kind = _exact(step, "sklearn.preprocessing", ("StandardScaler", "MinMaxScaler", "MaxAbsScaler"))
    spec: dict[str, Any]
    if kind == "StandardScaler":
        spec = {"op": "standard_scaler"}
        if step.with_mean:
            tensors[f"{index}.mean"] = _array(step.mean_)
            spec["mean"] = f"{index}.mean"
        if step.with_std:
            tensors[f"{index}.scale"] = _array(step.scale_)
            spec["scale"] = f"{index}.scale"
        return spec
    if kind == "MinMaxScaler":
        low, high = step.feature_range
        tensors[f"{index}.scale"], tensors[f"{index}.min"] = _array(step.scale_), _array(step.min_)
        return {"op": "minmax_scaler", "scale": f"{index}.scale", "min": f"{index}.min",
                "clip": bool(step.clip), "low": float(low), "high": float(high)}  # fmt: skip
    if kind == "MaxAbsScaler":
        tensors[f"{index}.scale"] = _array(step.scale_)
        return {"op": "maxabs_scaler", "scale": f"{index}.scale", "clip": bool(getattr(step, "clip", False))}
    raise Unsupported(f"step {type(step).__name__}")


def _head(head: Any, uses_proba: bool, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    coef, intercept = "head.coef", "head.intercept"
    if _exact(head, "sklearn.linear_model", ("LogisticRegression",)) and uses_proba:
        if getattr(head, "multi_class", "auto") not in ("auto", "multinomial", "deprecated"):
            raise Unsupported("one-vs-rest logistic regression")
        tensors[coef], tensors[intercept] = _array(head.coef_), _array(np.atleast_1d(head.intercept_))
        op = "logistic_binary" if len(head.classes_) <= 2 else "logistic_softmax"
        return {"op": op, "coef": coef, "intercept": intercept}
    if _exact(head, "sklearn.linear_model", LINEAR_REGRESSORS) and not uses_proba:
        tensors[coef], tensors[intercept] = _array(head.coef_), _array(head.intercept_)
        return {"op": "linear", "coef": coef, "intercept": intercept}
    raise Unsupported(f"final estimator {type(head).__name__}")


def convert(estimator: Any, *, uses_proba: bool, n_features: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(spec, tensors) for ``estimator``'s ``predict_proba`` (``uses_proba``) or ``predict``."""
    tensors: dict[str, np.ndarray] = {}
    if _exact(estimator, "sklearn.pipeline", ("Pipeline",)):
        *transforms, (_, head) = estimator.steps
    else:
        transforms, head = [], estimator
    steps = [s for i, (_, t) in enumerate(transforms) if (s := _step(i, t, tensors)) is not None]
    spec = {"version": VERSION, "n_features": int(n_features), "steps": steps,
            "head": _head(head, uses_proba, tensors)}  # fmt: skip
    return spec, tensors


# --- prediction (numpy only) ---------------------------------------------------------------------


def _expit(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` in place: the same operations, without four temporaries."""
    np.negative(x, out=x)
    with np.errstate(over="ignore"):
        np.exp(x, out=x)
    x += 1.0
    return np.divide(1.0, x, out=x)


def predict_compiled(spec: dict[str, Any], tensors: dict[str, np.ndarray], batch: np.ndarray) -> np.ndarray:
    """The estimator's output on ``batch`` (float32 rows), as scikit-learn computes it: the same
    operations in the same dtypes (float32 scaling, the product with float64 coefficients in
    float64), each written into an array this function owns rather than into a new temporary."""
    x = np.array(batch, dtype=np.float32, copy=True)
    for step in spec["steps"]:
        op = step["op"]
        if op == "standard_scaler":  # sklearn casts the parameters to the features' dtype first
            if "mean" in step:
                x -= tensors[step["mean"]].astype(x.dtype)
            if "scale" in step:
                x /= tensors[step["scale"]].astype(x.dtype)
        elif op == "minmax_scaler":
            x *= tensors[step["scale"]]
            x += tensors[step["min"]]
            if step["clip"]:
                np.clip(x, np.asarray(step["low"], dtype=x.dtype), np.asarray(step["high"], dtype=x.dtype), out=x)
        elif op == "maxabs_scaler":
            x /= tensors[step["scale"]]
            if step["clip"]:
                np.clip(x, np.asarray(-1.0, dtype=x.dtype), np.asarray(1.0, dtype=x.dtype), out=x)
        else:
            raise ValueError(f"unknown step {op!r}")
    head = spec["head"]
    coef, intercept = tensors[head["coef"]], tensors[head["intercept"]]
    scores = x @ coef.T if coef.ndim == 2 else x @ coef
    if scores.dtype == np.result_type(scores, intercept) and np.broadcast_shapes(scores.shape, intercept.shape) == scores.shape:
        scores += intercept  # the sum sklearn forms, written in place
    else:
        scores = scores + intercept
    if scores.ndim > 1 and scores.shape[1] == 1 and head["op"] != "linear":
        scores = scores.reshape(-1)
    if head["op"] == "logistic_binary":
        prob = _expit(scores)
        out = np.empty((prob.shape[0], 2), dtype=prob.dtype)
        np.subtract(1, prob, out=out[:, 0])
        out[:, 1] = prob
        return out
    if head["op"] == "logistic_softmax":
        scores -= scores.max(axis=1).reshape(-1, 1)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1).reshape(-1, 1)
        return scores
    if head["op"] == "linear":
        return scores
    raise ValueError(f"unknown head {head['op']!r}")


# --- files ---------------------------------------------------------------------------------------


def write_compiled(folder: Path, spec: dict[str, Any], weights: bytes) -> None:
    folder.mkdir(mode=0o755)
    for name, data in ((SPEC_NAME, json.dumps(spec, sort_keys=True).encode()), (WEIGHTS_NAME, weights)):
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)


def read_compiled(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from safetensors.numpy import load

    with open(folder / SPEC_NAME, "rb") as fh:
        spec = json.loads(fh.read(MAX_SPEC_BYTES + 1))
    with open(folder / WEIGHTS_NAME, "rb") as fh:
        tensors = load(fh.read(MAX_WEIGHTS_BYTES + 1))
    return spec, tensors


class FormDiffers(Exception):
    """The converted form does not give the estimator's own predictions: it is not used."""


def encoded(spec: dict[str, Any], tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bytes]:
    """The tensors as they will be read (safetensors round trip: what is checked is what is
    written) and their bytes."""
    from safetensors.numpy import load, save

    weights = save(tensors)
    return load(weights), weights


def _converted(estimator: Any, *, uses_proba: bool, n_features: int) -> tuple[dict[str, Any], dict[str, np.ndarray], bytes]:
    """(spec, tensors as they will be read, weights), or ``Unsupported``: anything odd about the
    estimator (a state without what its class needs, e.g. no ``coef_``) keeps the normal path,
    where scikit-learn says why."""
    try:
        spec, tensors = convert(estimator, uses_proba=uses_proba, n_features=n_features)
    except Unsupported:
        raise
    except Exception as exc:
        raise Unsupported(f"the estimator does not convert: {type(exc).__name__}") from exc
    return spec, *encoded(spec, tensors)


def checked_form(estimator: Any, *, uses_proba: bool, sample: np.ndarray, predictions: np.ndarray,
                 n_features: int) -> tuple[dict[str, Any], dict[str, np.ndarray], bytes]:  # fmt: skip
    """(spec, tensors, weights) of ``estimator``, checked against its own ``predictions`` on
    ``sample`` (float32 rows: the job's first batch). ``Unsupported`` or ``FormDiffers``.

    The job's other rows are then predicted by the form alone. That is no weaker than checking
    every row: the form computes a fixed function of the estimator's parameters (the same one
    sklearn's classes compute, pinned by the tests for each supported class); only vendor code
    that changed those classes' behaviour from inside the pickle could differ on other rows, and
    for those rows the vendor then gets the standard function of its own parameters, strictly
    less than its code could compute."""
    spec, tensors, weights = _converted(estimator, uses_proba=uses_proba, n_features=n_features)
    got = predict_compiled(spec, tensors, sample).astype(np.float32)
    if got.shape != predictions.shape or not np.all(np.abs(got - predictions) <= TOLERANCE):
        raise FormDiffers("compiled form differs from the estimator")
    return spec, tensors, weights


def plain_form(root: Any, *, probe: np.ndarray, n_features: int) -> tuple[dict[str, Any], dict[str, np.ndarray], bytes]:
    """(spec, tensors, weights) of a model ``plain_sklearn`` read without scikit-learn. There are
    no estimator predictions to check against, so the parameters must fit the classes and the
    features, and the form's output on ``probe`` (the job's first rows) must have the shape
    scikit-learn's would (one value per class or target per row) and be finite."""
    from .plain_sklearn import head, uses_proba

    proba = uses_proba(root)
    spec, tensors, weights = _converted(root, uses_proba=proba, n_features=n_features)
    coef = tensors[spec["head"]["coef"]]
    if proba:
        n_classes = len(head(root).classes_)
        if n_classes < 2 or coef.shape != ((1 if n_classes == 2 else n_classes), n_features):
            raise Unsupported("coefficients that do not fit the classes")
        want: tuple[int, ...] = (probe.shape[0], n_classes)
    else:
        if coef.ndim not in (1, 2) or coef.shape[-1] != n_features:
            raise Unsupported("coefficients that do not fit the features")
        want = (probe.shape[0],) if coef.ndim == 1 else (probe.shape[0], coef.shape[0])
    try:
        out = predict_compiled(spec, tensors, probe)
    except ValueError as exc:  # e.g. an intercept of another shape
        raise Unsupported(f"the form does not compute: {exc}") from exc
    if out.shape != want or not np.all(np.isfinite(out)):
        raise Unsupported("the form's output is not what the estimator's would be")
    return spec, tensors, weights
