"""Reading a linear scikit-learn model without scikit-learn and without running pickle code.

A scikit-learn artifact is a pickle: loading it imports scikit-learn (about 0.6 CPU-s in a fresh
sandbox, most of the job's CPU for a small model) and runs whatever the pickle says. The models
``compiled.py`` can compute with numpy (scalers, logistic and linear regression, pipelines of
them) are, once pickled, nothing but a few classes' names, dictionaries of settings and numpy
arrays. This reader unpickles such a file with an allow-list: a class name resolves only to

- one of those estimator classes, as a stand-in (``PlainEstimator``) that holds the pickled
  state and has no methods, so nothing of scikit-learn is imported or run;
- numpy's array, dtype and scalar constructors, and joblib's array wrapper (joblib's own reader
  reads the array bytes; an object array, whose bytes joblib would unpickle without our
  allow-list, is refused before it is read).

Anything else (another class, a function, an object array, a persistent id, a compressed file
joblib cannot open, a pickle from another scikit-learn version, a model fitted on another number
of features) raises ``NotPlain`` before it is used, and the runner loads the artifact with
scikit-learn as always. So a file read here ran no code at all: a hostile pickle naming
``os.system`` gets ``NotPlain``, never a call.

The stand-ins go to ``compiled.convert`` like the real estimators. The predictions then come from
``compiled.predict_compiled`` without a check against scikit-learn's own (there is none in the
process): that equality is what ``tests/evaluator/test_plain_sklearn.py`` pins for every supported
estimator, under the pinned scikit-learn version (the pickle's ``_sklearn_version`` must be that
version, so the state means what the tests saw).
"""

from __future__ import annotations

import codecs
import functools
import importlib
import importlib.metadata
import importlib.util
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

# (module, class) as scikit-learn pickles them: what ``compiled.convert`` supports.
ESTIMATORS = frozenset({
    ("sklearn.pipeline", "Pipeline"),
    ("sklearn.preprocessing._data", "StandardScaler"),
    ("sklearn.preprocessing._data", "MinMaxScaler"),
    ("sklearn.preprocessing._data", "MaxAbsScaler"),
    ("sklearn.linear_model._logistic", "LogisticRegression"),
    ("sklearn.linear_model._base", "LinearRegression"),
    ("sklearn.linear_model._ridge", "Ridge"),
    ("sklearn.linear_model._coordinate_descent", "Lasso"),
    ("sklearn.linear_model._coordinate_descent", "ElasticNet"),
})  # fmt: skip
NUMPY_GLOBALS = {
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,  # type: ignore[attr-defined]
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,  # type: ignore[attr-defined]
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,  # type: ignore[attr-defined]
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,  # type: ignore[attr-defined]
    # pickle protocol 5's out-of-band form (np.frombuffer + reshape; refuses object dtypes)
    ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,  # type: ignore[attr-defined]
    ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,  # type: ignore[attr-defined]
}
ARRAY_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
# How pickle protocol 2 writes bytes (str -> bytes, a pure function).
CODEC_GLOBALS = {("_codecs", "encode"): codecs.encode}


class NotPlain(Exception):
    """The artifact needs scikit-learn itself: the runner loads it the usual way."""


class PlainEstimator:
    """A scikit-learn estimator's pickled state (its ``__dict__``), and nothing else."""

    sklearn_class: tuple[str, str] = ("", "")

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise NotPlain("an estimator's state is not a dictionary of attributes")
        if any(key.startswith("__") or key in vars(PlainEstimator) for key in state):
            raise NotPlain("an estimator's state names one of the stand-in's own attributes")
        self.__dict__.update(state)


_STAND_INS = {origin: type(origin[1], (PlainEstimator,), {"sklearn_class": origin}) for origin in ESTIMATORS}


@functools.cache
def _joblib_reader() -> Any:
    """``joblib.numpy_pickle`` without the rest of joblib (its package imports the parallel
    machinery: about 70 ms of CPU). The modules imported for it are forgotten by the import
    system again (this module keeps its own reference), so a later ``import joblib`` (the usual
    load, after ``NotPlain``) gets the whole package as always."""
    if "joblib" in sys.modules:
        return importlib.import_module("joblib.numpy_pickle")
    spec = importlib.util.find_spec("joblib")
    if spec is None or spec.submodule_search_locations is None:
        raise NotPlain("joblib is not installed")
    before = set(sys.modules)
    sys.modules["joblib"] = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
    try:
        return importlib.import_module("joblib.numpy_pickle")
    finally:
        for name in set(sys.modules) - before:
            if name == "joblib" or name.startswith("joblib."):
                del sys.modules[name]


@functools.cache
def _unpickler_class() -> type:
    numpy_pickle = _joblib_reader()
    wrapper_class = numpy_pickle.NumpyArrayWrapper

    class PlainUnpickler(numpy_pickle.NumpyUnpickler):  # type: ignore[misc, name-defined]
        dispatch = numpy_pickle.NumpyUnpickler.dispatch.copy()

        def find_class(self, module: str, name: str) -> Any:
            origin = (module, name)
            if origin in _STAND_INS:
                return _STAND_INS[origin]
            if origin in NUMPY_GLOBALS:
                return NUMPY_GLOBALS[origin]
            if origin in CODEC_GLOBALS:
                return CODEC_GLOBALS[origin]
            if origin == ARRAY_WRAPPER:
                return wrapper_class
            raise NotPlain(f"the pickle names {module}.{name}")

        def persistent_load(self, pid: Any) -> Any:
            raise NotPlain("the pickle refers to a persistent object")

        def load_build(self) -> None:
            pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
            wrapper = self.stack[-1]
            if isinstance(wrapper, wrapper_class):
                dtype = getattr(wrapper, "dtype", None)
                if getattr(wrapper, "subclass", None) is not np.ndarray or not isinstance(dtype, np.dtype):
                    raise NotPlain("an array of another type")
                if dtype.hasobject:  # joblib would unpickle its items with no allow-list
                    raise NotPlain("an object array")
                self.stack[-1] = wrapper.read(self, True)

        dispatch[pickle.BUILD[0]] = load_build

    return PlainUnpickler


def warm() -> None:
    """What a pooled runner imports ahead for this reader (``runner pooled --plain-sklearn``)."""
    _unpickler_class()
    sklearn_version()
    importlib.import_module("safetensors.numpy")


@functools.cache
def sklearn_version() -> str:
    """The version this sandbox's scikit-learn would have (read from its metadata, not imported)."""
    return importlib.metadata.version("scikit-learn")


def _estimators(root: PlainEstimator) -> list[Any]:
    if type(root).sklearn_class == ("sklearn.pipeline", "Pipeline"):
        steps = getattr(root, "steps", None)
        if not isinstance(steps, list) or not steps:
            raise NotPlain("a pipeline without steps")
        parts = []
        for step in steps:
            if not (isinstance(step, tuple) and len(step) == 2 and isinstance(step[0], str)):
                raise NotPlain("a pipeline step is not a (name, estimator) pair")
            parts.append(step[1])
        if getattr(root, "transform_input", None) is not None:
            raise NotPlain("a pipeline with transform_input")
        return [root, *(p for p in parts if isinstance(p, PlainEstimator))]
    return [root]


def read_plain(path: Path, *, n_features: int) -> PlainEstimator:
    """The artifact at ``path`` as stand-ins, or ``NotPlain``. Every estimator in it must have
    been pickled by this sandbox's scikit-learn version and fitted on ``n_features`` features
    (scikit-learn itself refuses other feature counts: the usual load gives its own message)."""
    unpickler_class, numpy_pickle = _unpickler_class(), _joblib_reader()
    try:
        with open(path, "rb") as raw, numpy_pickle._validate_fileobject_and_memmap(raw, str(path), None) as (fh, _):
            root = unpickler_class(str(path), fh, True).load()
    except NotPlain:
        raise
    except Exception as exc:  # truncated, compressed oddly, not a pickle: the usual load reports it
        raise NotPlain(f"not read: {type(exc).__name__}") from exc
    if not isinstance(root, PlainEstimator):
        raise NotPlain(f"the pickle holds a {type(root).__name__}")
    version = sklearn_version()
    for estimator in _estimators(root):
        if getattr(estimator, "_sklearn_version", None) != version:
            raise NotPlain("pickled by another scikit-learn version")
        if estimator is not root or type(root).sklearn_class != ("sklearn.pipeline", "Pipeline"):
            seen = getattr(estimator, "n_features_in_", None)
            if not isinstance(seen, (int, np.integer)) or int(seen) != n_features:
                raise NotPlain("fitted on another number of features")
    return root


def head(root: PlainEstimator) -> Any:
    """The final estimator: ``root`` itself, or a pipeline's last stand-in step."""
    return _estimators(root)[-1]


def uses_proba(root: PlainEstimator) -> bool:
    """Whether the runner would call ``predict_proba`` (a classifier at the end) or ``predict``."""
    return type(head(root)).sklearn_class == ("sklearn.linear_model._logistic", "LogisticRegression")
