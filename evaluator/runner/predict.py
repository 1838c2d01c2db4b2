"""Batched prediction: features in, one float32 ``.npy`` out (never pickled)."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable, Iterator
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
# A compiled model's batch, as float64 working copies: small enough to stay in the CPU's cache
# (1 MiB: 1M rows x 30 features predict in 44 ms, against 57 ms at 16 MiB and 75 ms for
# scikit-learn's own predict_proba on all rows; BENCHMARKS.md, session 7), never below the job's size.
COMPILED_BATCH_BYTES = 1 << 20


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."


# Training (``train.py``) reads its features whole: into memory when they take at most this share
# of the container's memory limit; memory-mapped otherwise (prediction streams them: FeatureFile). A model reading its batches from a mapped file pays page
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


class FeatureFile:
    """A 2-D ``.npy`` of numbers read one batch of rows at a time into a single reused buffer.

    The features never sit in memory whole (any size fits the container's limit), are never
    memory-mapped (a model reading a mapped bind mount pays page faults per batch), and each
    batch is read just before the model reads it, while it is still in the CPU's cache. The
    header is checked against the file's size before anything is read."""

    def __init__(self, path: Path) -> None:
        try:
            self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise RunnerError(EXIT_INPUT, f"cannot read features: {type(exc).__name__}") from exc
        try:
            shape, fortran, dtype = _npy_header(self._file)
            self._offset = self._file.tell()
            size = os.fstat(self._file.fileno()).st_size
        except Exception as exc:
            self._file.close()
            raise RunnerError(EXIT_INPUT, f"cannot read features: {type(exc).__name__}") from exc
        if len(shape) != 2:
            self._file.close()
            raise RunnerError(EXIT_INPUT, "features must be a 2-D array")
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biuf":
            self._file.close()
            raise RunnerError(EXIT_INPUT, f"cannot read features: dtype {dtype.str} is not numeric")
        if size - self._offset != shape[0] * shape[1] * dtype.itemsize:
            self._file.close()
            raise RunnerError(EXIT_INPUT, "cannot read features: the file's size does not match its header")
        self.n_rows, self.n_features = int(shape[0]), int(shape[1])
        self._dtype, self._fortran = dtype, fortran

    def batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 C-contiguous rows) per batch; each batch reuses the last one's memory."""
        if self._fortran:  # columns first in the file: rows are not contiguous, map and copy out
            mapped = np.load(self._file.name, allow_pickle=False, mmap_mode="r")
            for start in range(0, self.n_rows, batch_size):
                yield start, np.ascontiguousarray(mapped[start : start + batch_size], dtype=np.float32)
            return
        buffer = np.empty((min(batch_size, self.n_rows), self.n_features), dtype=self._dtype)
        self._file.seek(self._offset)
        for start in range(0, self.n_rows, batch_size):
            batch = buffer[: min(batch_size, self.n_rows - start)]
            _read_exactly(self._file, batch)
            yield start, np.ascontiguousarray(batch, dtype=np.float32)

    def close(self) -> None:
        self._file.close()


def _npy_header(fh: io.FileIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def _read_exactly(fh: io.FileIO, into: np.ndarray) -> None:
    view = into.reshape(-1).data.cast("B")  # into is C-contiguous: a view, no copy
    done = 0
    while done < len(view):
        got = fh.readinto(view[done:])
        if not got:
            raise RunnerError(EXIT_INPUT, "cannot read features: the file ended early")
        done += got


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


def predict_batches(predict: Predictor, batches: Iterable[tuple[int, np.ndarray]], n_rows: int) -> np.ndarray:
    """The predictions of every batch, placed into one float32 array of ``n_rows`` rows (no
    list of parts to concatenate: one copy of each batch's output)."""
    out: np.ndarray | None = None
    for start, batch in batches:
        try:
            raw = predict(batch)
        except Exception as exc:
            raise RunnerError(EXIT_PREDICT, f"predict failed: the model's code raised {_describe(exc)}") from exc
        values = _as_float32(raw, batch.shape[0])
        if out is None:
            out = np.empty((n_rows, *values.shape[1:]), dtype=np.float32)
        elif values.shape[1:] != out.shape[1:]:
            shapes = sorted({out.shape[1:], values.shape[1:]})
            raise RunnerError(EXIT_CONTRACT, f"batches gave predictions of different shapes per row: {shapes}")
        # Copied out before the next batch is read into the same buffer (a model may return its input).
        out[start : start + batch.shape[0]] = values
    if out is None:
        raise RunnerError(EXIT_INPUT, "features have no rows")
    return out


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


def _compiled_batch_size(batch_size: int, n_features: int) -> int:
    """The site's own numpy code batches by bytes, not by the vendor's batch size."""
    return max(batch_size, COMPILED_BATCH_BYTES // (8 * max(1, n_features)))


def _sklearn_predictor(model_path: Path, features: FeatureFile, batch_size: int, compile_to: Path) -> tuple[Predictor, int]:
    """(predict, batch size) of a scikit-learn job on a site that keeps compiled forms
    (``compiled.py``): the model's numpy-only form when it has one, written to ``compile_to`` for
    later jobs and used for every row of this one; else the estimator itself."""
    from .compiled import FormDiffers, Unsupported, checked_form, plain_form, predict_compiled, write_compiled
    from .plain_sklearn import NotPlain, read_plain

    _, first = next(features.batches(batch_size))
    try:
        root = read_plain(model_path, n_features=features.n_features)
        spec, tensors, weights = plain_form(root, probe=first, n_features=features.n_features)
        outcome = "compiled form written (read without scikit-learn)"
    except (NotPlain, Unsupported) as exc:
        print(f"runner: loading with scikit-learn ({exc})", file=sys.stderr)
        predict = load_model("sklearn", model_path)
        # A copy: a scaler with copy=False scales its input in place.
        want = predict_batches(predict, [(0, first.copy())], first.shape[0])
        try:
            spec, tensors, weights = checked_form(
                getattr(predict, "__self__", None), uses_proba=getattr(predict, "__name__", "") == "predict_proba",
                sample=first, predictions=want, n_features=features.n_features,
            )  # fmt: skip
        except (Unsupported, FormDiffers) as exc:
            print(f"runner: no compiled form: {exc}", file=sys.stderr)
            return predict, batch_size
        outcome = "compiled form written"
    try:
        write_compiled(compile_to, spec, weights)
    except OSError as exc:  # e.g. the pickle's own code put something there first: the job goes on
        outcome = f"compiled form not written: {type(exc).__name__}"
    print(f"runner: {outcome}", file=sys.stderr)
    return (lambda batch: predict_compiled(spec, tensors, batch)), _compiled_batch_size(batch_size, features.n_features)


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
    """``compile_to``: for a scikit-learn model, predict with its numpy-only form and write that
    form there, when it has one (``compiled.py``)."""
    features = FeatureFile(features_path)
    try:
        if weights_offset is not None:
            predict = load_with_offset(model_format, model_path, weights_offset)
        elif compile_to is not None and model_format == "sklearn" and features.n_rows > 0:
            predict, batch_size = _sklearn_predictor(model_path, features, batch_size, compile_to)
        else:
            predict = load_model(model_format, model_path)
        if model_format == "compiled":
            batch_size = _compiled_batch_size(batch_size, features.n_features)
        predictions = predict_batches(predict, features.batches(batch_size), features.n_rows)
        write_predictions(output_path, predictions)
    finally:
        features.close()
