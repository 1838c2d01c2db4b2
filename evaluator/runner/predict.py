"""Batched prediction: features in, one float32 ``.npy`` out (never pickled)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from .errors import (
    EXIT_ARTIFACT,
    EXIT_CONTRACT,
    EXIT_INPUT,
    EXIT_LOAD,
    EXIT_OUTPUT,
    EXIT_PREDICT,
    NotAModel,
    RunnerError,
)
from .loaders import LOADERS, Predictor

MESSAGE_CHARS = 400  # a garbage pickle's error quotes its bytes: keep one readable line
COMPILED_BATCH_BYTES = 16 << 20  # float64 working copies of a compiled model's batch


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."


# Read the features into memory when they take at most this share of the container's memory
# limit; memory-map them otherwise. A model reading its batches from a mapped file pays page
# faults on a bind mount (TorchScript at 1M rows: 22.9 s mapped, 15.2 s in memory).
IN_MEMORY_SHARE = 0.25
CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def memory_limit_bytes() -> int | None:
    """The container's memory limit (cgroup v2 or v1), or None when unlimited or unknown."""
    for name in CGROUP_MEMORY_LIMITS:
        try:
            with open(name, encoding="ascii") as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 reports "unlimited" as a huge number
            return int(text)
        return None
    return None


def _fits_in_memory(path: Path) -> bool:
    limit = memory_limit_bytes()
    try:
        size = os.stat(path).st_size
    except OSError:
        return False
    return limit is not None and size <= limit * IN_MEMORY_SHARE


def read_features(path: Path) -> np.ndarray:
    try:
        if _fits_in_memory(path):
            features = np.load(str(path), allow_pickle=False)
        else:
            features = np.load(str(path), allow_pickle=False, mmap_mode="r")
    except Exception as exc:
        raise RunnerError(EXIT_INPUT, f"cannot read features: {type(exc).__name__}") from exc
    if not isinstance(features, np.ndarray) or features.ndim != 2:
        raise RunnerError(EXIT_INPUT, "features must be a 2-D array")
    return features


def load_model(model_format: str, model_path: Path) -> Predictor:
    loader = LOADERS.get(model_format)
    if loader is None:
        raise RunnerError(EXIT_LOAD, f"unknown model format {model_format!r}")
    try:
        return loader(model_path)
    except NotAModel as exc:
        raise RunnerError(EXIT_ARTIFACT, str(exc)[:MESSAGE_CHARS]) from exc
    except Exception as exc:
        raise RunnerError(EXIT_LOAD, f"cannot load model: the model's code raised {_describe(exc)}") from exc


def _as_float32(value: object, n_expected: int) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise RunnerError(EXIT_CONTRACT, f"the predictions are not an array: {_describe(exc)}") from exc
    if array.dtype.kind not in "biuf":
        raise RunnerError(
            EXIT_CONTRACT, f"the predictions have non-numeric dtype {array.dtype} (the contract: numbers)"
        )
    if array.ndim == 0 or array.shape[0] != n_expected:
        got = "a scalar" if array.ndim == 0 else f"{array.shape[0]} rows (shape {array.shape})"
        raise RunnerError(
            EXIT_CONTRACT,
            f"a batch of {n_expected} rows gave {got}; the contract: one prediction per input row",
        )
    return array.astype(np.float32, copy=False)


def predict_batches(predict: Predictor, features: np.ndarray, batch_size: int) -> np.ndarray:
    parts: list[np.ndarray] = []
    for start in range(0, features.shape[0], batch_size):
        batch = np.ascontiguousarray(features[start : start + batch_size], dtype=np.float32)
        try:
            raw = predict(batch)
        except Exception as exc:
            raise RunnerError(EXIT_PREDICT, f"predict failed: the model's code raised {_describe(exc)}") from exc
        parts.append(_as_float32(raw, batch.shape[0]))
    if not parts:
        raise RunnerError(EXIT_INPUT, "features have no rows")
    if len({p.shape[1:] for p in parts}) != 1:
        shapes = sorted({p.shape[1:] for p in parts})
        raise RunnerError(EXIT_CONTRACT, f"batches gave predictions of different shapes per row: {shapes}")
    return np.concatenate(parts, axis=0)


def write_predictions(path: Path, predictions: np.ndarray) -> None:
    try:
        # O_EXCL|O_NOFOLLOW: never write through something already placed at the path.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, np.ascontiguousarray(predictions, dtype=np.float32), allow_pickle=False)
    except OSError as exc:
        raise RunnerError(EXIT_OUTPUT, f"cannot write predictions: {exc.strerror}") from exc


def load_with_offset(model_format: str, model_path: Path, offset_path: Path) -> Predictor:
    """The parent model with a fine-tuning offset ``D`` added to its parameters, by name."""
    from .train import _layout, load_trainer, read_offset

    trainer = load_trainer(model_format, model_path)
    weights = trainer.get_weights()
    offset = read_offset(offset_path, _layout(weights))
    trainer.set_weights({n: w + offset[n] if n in offset else w for n, w in weights.items()})
    return trainer.predict


def run_predict(
    *,
    model_format: str,
    model_path: Path,
    features_path: Path,
    output_path: Path,
    batch_size: int,
    weights_offset: Path | None = None,
    compile_to: Path | None = None,
) -> None:
    """``compile_to``: for a scikit-learn model, also write its numpy-only form there when it has
    one that gives these same predictions (``compiled.py``)."""
    features = read_features(features_path)
    if weights_offset is not None:
        predict = load_with_offset(model_format, model_path, weights_offset)
    else:
        predict = load_model(model_format, model_path)
    if model_format == "compiled":  # the site's own numpy code: batches by bytes, not the vendor's size
        batch_size = max(batch_size, COMPILED_BATCH_BYTES // (8 * max(1, features.shape[1])))
    predictions = predict_batches(predict, features, batch_size)
    write_predictions(output_path, predictions)
    if compile_to is not None and model_format == "sklearn" and weights_offset is None:
        from .compiled import try_compile

        outcome = try_compile(
            getattr(predict, "__self__", None), uses_proba=getattr(predict, "__name__", "") == "predict_proba",
            features=features, predictions=predictions, batch_size=batch_size, folder=compile_to,
        )  # fmt: skip
        print(f"runner: {outcome}", file=sys.stderr)
