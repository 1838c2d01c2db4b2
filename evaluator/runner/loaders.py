"""One loader per model format; each returns ``predict(batch) -> array``.

Loading a vendor artifact runs vendor-controlled code (pickle, TorchScript, ONNX
custom ops, ``model.py``); that is why these functions exist only in the sandbox.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import NotAModel

Predictor = Callable[[np.ndarray], Any]


def load_torchscript(path: Path) -> Predictor:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # TorchScript archives hold no Python: a failure is the file's
        raise NotAModel(f"not a TorchScript archive: {type(exc).__name__}: {exc}") from exc
    module.eval()

    def predict(batch: np.ndarray) -> Any:
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(batch)))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().cpu().numpy()

    return predict


def load_sklearn(path: Path) -> Predictor:
    import joblib

    try:
        estimator = joblib.load(str(path))
    except Exception as exc:
        raise NotAModel(f"not a joblib/pickle file: {type(exc).__name__}: {exc}") from exc
    # Classifiers give probabilities (the contract); regressors have no predict_proba.
    method = getattr(estimator, "predict_proba", None) or getattr(estimator, "predict", None)
    if method is None:
        kind = type(estimator).__name__
        raise NotAModel(f"the sklearn artifact unpickled to a {kind}, which has neither predict_proba nor predict")
    sklearn = sys.modules.get("sklearn")  # imported by the unpickling when the model uses it
    if sklearn is not None:
        # Every features file is checked finite on the host before a sandbox reads it (site data
        # at registration, a dry run's sample, the runner check's own rows), so scikit-learn's
        # NaN/infinity scan of each batch only repeats it: a sixth of a linear model's predict at
        # 4,096 rows a batch. Finite inputs give the same predictions either way.
        sklearn.set_config(assume_finite=True)
    return method


def _onnx_array(value: Any) -> np.ndarray:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        # skl2onnx's ZipMap: one {class: probability} dict per row.
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
    return np.asarray(value)


def load_onnx(path: Path) -> Predictor:
    import onnxruntime as ort

    options = ort.SessionOptions()
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise NotAModel(f"not an ONNX model onnxruntime can load: {type(exc).__name__}: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise NotAModel(f"the ONNX model must have one input, it has {len(inputs)}")
    input_name = inputs[0].name
    input_dtype = np.float64 if "double" in inputs[0].type else np.float32
    outputs = session.get_outputs()
    # Classifiers exported by skl2onnx have (label, probabilities): take the probabilities.
    chosen = outputs[-1] if len(outputs) > 1 else outputs[0]
    for out in outputs:
        if "prob" in out.name.lower():
            chosen = out
            break
    output_name = chosen.name

    def predict(batch: np.ndarray) -> Any:
        result = session.run([output_name], {input_name: batch.astype(input_dtype, copy=False)})
        return _onnx_array(result[0])

    return predict


def import_model_module(model_dir: Path) -> Any:
    """Import the package's ``model.py`` (vendor code) as the module ``vendor_model``."""
    model_file = model_dir / "model.py"
    if not model_file.is_file():
        raise NotAModel("model.py is missing from the model package")
    # Let model.py import helper modules shipped next to it.
    sys.path.insert(0, str(model_dir))
    spec = importlib.util.spec_from_file_location("vendor_model", model_file)
    if spec is None or spec.loader is None:
        raise NotAModel("cannot import model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["vendor_model"] = module
    spec.loader.exec_module(module)
    return module


def load_python_package(model_dir: Path) -> Predictor:
    module = import_model_module(model_dir)
    load = getattr(module, "load", None)
    predict_fn = getattr(module, "predict", None)
    if not callable(load) or not callable(predict_fn):
        raise NotAModel("model.py must define load(model_dir) and predict(model, features)")
    model = load(str(model_dir))

    def predict(batch: np.ndarray) -> Any:
        return predict_fn(model, batch)

    return predict


def load_compiled(model_dir: Path) -> Predictor:
    """A numpy-only form the host made from an earlier job's conversion (``compiled.py``)."""
    from .compiled import predict_compiled, read_compiled

    try:
        spec, tensors = read_compiled(model_dir)
    except Exception as exc:
        raise NotAModel(f"not a compiled model: {type(exc).__name__}") from exc

    def predict(batch: np.ndarray) -> Any:
        return predict_compiled(spec, tensors, batch)

    return predict


# What a pooled runner imports before its job arrives, per format: the runtime the format needs
# and nothing else (a sandbox pays each import in CPU once per job). For scikit-learn, the
# modules of the documented example; an estimator from elsewhere imports its own on unpickling.
WARM_IMPORTS: dict[str, tuple[str, ...]] = {
    "torchscript": ("torch",),
    "sklearn": ("joblib", "sklearn.base", "sklearn.pipeline", "sklearn.preprocessing", "sklearn.linear_model"),
    "onnx": ("onnxruntime",),
    "python_package": (),
    "compiled": ("safetensors.numpy",),  # numpy and the safetensors reader: no scikit-learn
}


def warm_imports(model_format: str) -> None:
    for name in WARM_IMPORTS.get(model_format, ()):
        importlib.import_module(name)


LOADERS: dict[str, Callable[[Path], Predictor]] = {
    "torchscript": load_torchscript,
    "sklearn": load_sklearn,
    "onnx": load_onnx,
    "python_package": load_python_package,
    "compiled": load_compiled,  # chosen by the site's agent only, never a vendor's format
}
