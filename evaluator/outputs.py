"""Defensive reading of what a sandbox left in its output folder.

The folder was writable by vendor code, so everything in it is hostile until checked:
only the one expected name, ``lstat`` before opening, a regular file with one link
(no symlink, FIFO, device or hard link to a site file), opened with ``O_NOFOLLOW`` and
``O_NONBLOCK`` (a FIFO swapped in cannot hang us), size capped before reading, the
``.npy`` header parsed and checked against the data size before any allocation,
never unpickled, then a fixed schema: rows, shape for the task type, numeric dtype,
finite values, probabilities within [0, 1].
"""

from __future__ import annotations

import io
import math
import os
import stat
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np

from evaluator.metrics import scan
from evaluator.sandbox import PREDICTIONS_NAME, InvalidOutput

PROBABILITY_TOLERANCE: Final = 1e-4
PROBABILITY_SUM_TOLERANCE: Final = 1e-3
NUMERIC_KINDS: Final = frozenset("fiu")
TASK_TYPES: Final = frozenset({"binary_classification", "multiclass_classification", "regression"})


def _open_checked(path: Path, max_bytes: int, what: str) -> tuple[io.FileIO, int]:
    """The file opened for reading after the checks above, and its size."""
    try:
        before = os.lstat(path)
    except FileNotFoundError as exc:
        raise InvalidOutput("no predictions were written" if what == "the predictions" else f"{what}: missing") from exc
    if not stat.S_ISREG(before.st_mode):
        raise InvalidOutput(f"{what}: not a regular file")
    if before.st_nlink != 1:
        raise InvalidOutput(f"{what}: more than one link")
    if before.st_size > max_bytes:
        raise InvalidOutput(f"{what}: too large")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidOutput(f"{what}: cannot be opened") from exc
    fh = io.FileIO(fd, "rb")  # unbuffered: the payload is read straight into its array
    try:
        st = os.fstat(fh.fileno())
        # Same inode as the one checked, and still a plain single-link file.
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise InvalidOutput(f"{what}: changed while being read")
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size > max_bytes:
            raise InvalidOutput(f"{what}: changed while being read")
    except BaseException:
        fh.close()
        raise
    return fh, st.st_size


def _read_capped(path: Path, max_bytes: int, what: str = "the predictions") -> bytes:
    fh, _ = _open_checked(path, max_bytes, what)
    with fh:
        data = _read_up_to(fh, max_bytes + 1)
    if len(data) > max_bytes:
        raise InvalidOutput(f"{what}: too large")
    return data


def _read_up_to(fh: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left > 0:
        chunk = fh.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


read_capped = _read_capped  # for the other files a sandbox leaves (evaluator/compiled_models.py)


def _npy_header(fh: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, element count) of a ``.npy`` header, checked: a plain
    numeric array of 1 or 2 dimensions (never an object dtype: nothing is unpickled)."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise InvalidOutput("unsupported .npy version")
    except InvalidOutput:
        raise
    except Exception as exc:  # numpy raises ValueError, OSError, SyntaxError, ...
        raise InvalidOutput("the predictions are not a .npy array") from exc
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidOutput("the predictions must be a plain numeric array")
    if dtype.kind not in NUMERIC_KINDS:
        raise InvalidOutput(f"the predictions have non-numeric dtype {dtype.str}")
    if len(shape) not in (1, 2) or any(d < 0 for d in shape):
        raise InvalidOutput(f"the predictions have unexpected shape {shape}")
    count = 1
    for d in shape:
        count *= d
    return shape, fortran, dtype, count


def _as_float64(flat: np.ndarray, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    array = flat.reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=np.float64)  # a native, writable copy


def parse_npy(data: bytes) -> np.ndarray:
    """A numeric array from ``.npy`` bytes, without pickle and without trusting the
    header's shape for an allocation (it must match the bytes that are there)."""
    fh = io.BytesIO(data)
    shape, fortran, dtype, count = _npy_header(fh)
    if len(data) - fh.tell() != count * dtype.itemsize:
        raise InvalidOutput("the predictions file size does not match its header")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=fh.tell())
    return _as_float64(flat, shape, fortran)


def read_npy(path: Path, max_bytes: int) -> np.ndarray:
    """``parse_npy`` of the file at ``path`` (opened and checked as ``_read_capped`` does), read
    straight into the array's own memory: the header is checked against the file's size before
    the allocation, and the payload is copied once, not through an intermediate ``bytes``."""
    fh, size = _open_checked(path, max_bytes, "the predictions")
    with fh:
        shape, fortran, dtype, count = _npy_header(fh)
        if size - fh.tell() != count * dtype.itemsize:
            raise InvalidOutput("the predictions file size does not match its header")
        flat = np.empty(count, dtype=dtype)
        view = flat.data.cast("B")
        done = 0
        while done < len(view):
            got = fh.readinto(view[done:])
            if not got:
                raise InvalidOutput("the predictions file size does not match its header")
            done += got
        if fh.read(1):  # grew since it was checked: not the file whose size was checked
            raise InvalidOutput("the predictions: changed while being read")
    return _as_float64(flat, shape, fortran)


def validate_predictions(
    array: np.ndarray, *, n_rows: int, task_type: str, n_classes: int | None
) -> np.ndarray:
    """Check the fixed schema; returns the array unchanged (float64)."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown task type {task_type!r}")
    if array.ndim == 0 or array.shape[0] != n_rows:
        raise InvalidOutput(f"expected {n_rows} rows, got shape {array.shape}")
    # One cache-sized pass per chunk of rows: finiteness, the probability range and the row sums below.
    low, high, worst_sum = scan(array, row_sum_deviation=task_type != "regression" and array.ndim == 2 and array.shape[1] >= 2)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InvalidOutput("the predictions contain NaN or infinite values")
    if task_type == "regression":
        if not (array.ndim == 1 or array.shape[1] == 1):
            raise InvalidOutput(f"regression needs shape (n,) or (n, 1), got {array.shape}")
        return array
    if task_type == "binary_classification":
        if n_classes not in (None, 2):
            raise ValueError("a binary task has 2 classes")
        if not (array.ndim == 1 or array.shape[1] in (1, 2)):
            raise InvalidOutput(f"binary needs shape (n,), (n, 1) or (n, 2), got {array.shape}")
    else:
        if n_classes is None or n_classes < 2:
            raise ValueError("a multiclass task needs n_classes >= 2")
        if array.ndim != 2 or array.shape[1] != n_classes:
            raise InvalidOutput(f"multiclass needs shape (n, {n_classes}), got {array.shape}")
    if low < -PROBABILITY_TOLERANCE or high > 1 + PROBABILITY_TOLERANCE:
        raise InvalidOutput("probabilities must lie in [0, 1]")
    if array.ndim == 2 and array.shape[1] >= 2 and not worst_sum <= PROBABILITY_SUM_TOLERANCE:
        raise InvalidOutput("each row of class probabilities must sum to 1")
    return array


def load_predictions(
    out_dir: Path, *, n_rows: int, task_type: str, n_classes: int | None, max_bytes: int
) -> np.ndarray:
    """The validated predictions (float64, shape as written) from a sandbox's output folder.

    Raises ``InvalidOutput`` for anything but exactly one well-formed ``predictions.npy``.
    """
    try:
        dir_stat = os.lstat(out_dir)
        names = os.listdir(out_dir)
    except OSError as exc:
        raise InvalidOutput("the output folder cannot be read") from exc
    if not stat.S_ISDIR(dir_stat.st_mode):
        raise InvalidOutput("the output folder is not a folder")
    if names != [PREDICTIONS_NAME]:
        raise InvalidOutput("no predictions were written" if not names else "unexpected files in the output")
    array = read_npy(out_dir / PREDICTIONS_NAME, max_bytes)
    return validate_predictions(array, n_rows=n_rows, task_type=task_type, n_classes=n_classes)
