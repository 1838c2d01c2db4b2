"""The site's private data store.

Layout under ``data_dir/tasks/<task_id>/``::

    features/features.npy   float32 (n_rows, n_features)  -- the ONLY folder mounted into a sandbox
    labels/labels.npy       int64 class indices or float64 values; never mounted for evaluation
    meta.json               row count, fingerprint, spec
    train/                  the train split for fine-tuning (``register_task_data(split="train")``),
                            the same layout; never mounted as such (see ``TrainData``)

Features and labels live in separate folders so that mounting the features folder (or the
parent of ``features.npy``) can never expose the labels. The labels folder and ``meta.json`` are
owner-only (0700/0600); the features folder is world-readable (0755/0644) because the sandbox
runs as uid 65534 and reads it through a read-only bind mount.

The fingerprint is an HMAC-SHA256, keyed with the site's own secret (``fingerprint.key`` in
``data_dir``, 32 random bytes made at first use, 0600), over each stored array's dtype, shape and
bytes; it is reported to the hub and checked again whenever the agent loads the data for a job.
Keyed, because the hub (or whoever reads it) must be able to see that a shard changed but not to
test which rows it holds: an unkeyed hash of a public subset would name the site holding it.
Shards stored before the key (``meta.json`` without ``fingerprint_scheme``) are still verified
with the old unkeyed sha256; registering them again replaces the value the hub holds.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TASK_TYPES = ("binary_classification", "multiclass_classification", "regression")
FEATURES_FILE = "features.npy"
LABELS_FILE = "labels.npy"
MAX_FEATURES = 1_000_000
SPLITS = ("test", "train")
VALIDATION_FRACTION = 0.2
VALIDATION_SEED = 0
MIN_TRAIN_ROWS = 5
FINGERPRINT_KEY_FILE = "fingerprint.key"
FINGERPRINT_KEY_BYTES = 32
FINGERPRINT_SCHEME = "hmac-sha256"
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class DatasetError(ValueError):
    """Base class of data store errors; ``reason`` is the coarse failure reason for the hub."""

    reason = "data_unavailable"


class InvalidData(DatasetError):
    """The owner's files do not match the task's input spec."""


class DataUnavailable(DatasetError):
    """No (intact) data is stored for this task on this site."""


@dataclass(frozen=True)
class TaskData:
    task_id: str
    task_type: str
    n_features: int
    n_classes: int | None
    row_count: int
    fingerprint: str
    features_dir: Path
    features_path: Path
    labels: np.ndarray

    @property
    def split_sizes(self) -> dict[str, int]:
        return {"test": self.row_count}


def task_dir(data_dir: str | os.PathLike[str], task_id: int | str) -> Path:
    tid = str(task_id)
    if not _TASK_ID.match(tid) or tid in {".", ".."}:
        raise InvalidData(f"task id {tid!r} is not a valid identifier")
    return Path(data_dir) / "tasks" / tid


def site_key(data_dir: str | os.PathLike[str], *, create: bool = True) -> bytes:
    """The site's fingerprint key, made at first use: ``data_dir/fingerprint.key``, 0600.

    Written under a temporary name and linked into place, so two agents starting at once agree
    on one key and nobody ever reads a half-written one. ``create=False`` (verifying stored
    data): a missing key is ``DataUnavailable``, never silently replaced."""
    root = Path(data_dir)
    path = root / FINGERPRINT_KEY_FILE
    if create and not os.path.lexists(path):
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".key-")  # 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(FINGERPRINT_KEY_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another agent made it first: use theirs
        finally:
            os.unlink(tmp)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise DataUnavailable(f"cannot open the site's fingerprint key {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size != FINGERPRINT_KEY_BYTES:
            raise DataUnavailable(f"{path} is not a {FINGERPRINT_KEY_BYTES}-byte key file")
        if st.st_mode & 0o077:
            os.fchmod(fh.fileno(), 0o600)  # e.g. restored from a backup with loose modes
        return fh.read()


def fingerprint(features: np.ndarray, labels: np.ndarray, *, key: bytes) -> str:
    """64 hex digits: HMAC-SHA256 under the site's ``key`` of each array's dtype, shape, bytes."""
    if len(key) < FINGERPRINT_KEY_BYTES:
        raise ValueError("the fingerprint key is too short")
    return _digest(hmac.new(key, digestmod=hashlib.sha256), features, labels)


def _unkeyed_fingerprint(features: np.ndarray, labels: np.ndarray) -> str:
    """The fingerprint of shards stored before the key (verification only, never reported)."""
    return _digest(hashlib.sha256(), features, labels)


def _digest(h: Any, features: np.ndarray, labels: np.ndarray) -> str:
    for name, arr in (("features", features), ("labels", labels)):
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}:{arr.dtype.str}:{list(arr.shape)}\n".encode())
        h.update(arr.data)  # C-contiguous buffer, no copy
    return str(h.hexdigest())


def _matches(
    meta: Mapping[str, Any], data_dir: str | os.PathLike[str], features: np.ndarray, labels: np.ndarray
) -> bool:
    if meta.get("fingerprint_scheme") == FINGERPRINT_SCHEME:
        expected = fingerprint(features, labels, key=site_key(data_dir, create=False))
    else:
        expected = _unkeyed_fingerprint(features, labels)
    return hmac.compare_digest(expected, str(meta.get("fingerprint", "")))


# --- reading the owner's files -------------------------------------------------------------


def read_table(path: Path) -> np.ndarray:
    """Read .npy, .csv or .parquet into an array (2-D for tables); no pickle, ever.

    A CSV header row is recognised when it is not numeric; a numeric first row is data (name
    your columns, e.g. `feature_0`, rather than `0`)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InvalidData(f"{path} is not a file")
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InvalidData(f"{path}: not a plain .npy array ({exc})") from None
    import pandas as pd

    if suffix == ".csv":
        try:
            df = pd.read_csv(path, header=None)
            if len(df) and not _row_is_numeric(df.iloc[0]):
                df = pd.read_csv(path, header=0)  # the first row is a header
        except (ValueError, pd.errors.ParserError) as exc:
            raise InvalidData(f"{path}: cannot read CSV ({exc})") from None
    elif suffix in {".parquet", ".pq"}:
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types
            raise InvalidData(f"{path}: cannot read Parquet ({type(exc).__name__})") from None
    else:
        raise InvalidData(f"{path}: unsupported file type {suffix!r} (use .npy, .csv or .parquet)")
    non_numeric = [str(c) for c in df.columns if not (pd.api.types.is_numeric_dtype(df[c]))]
    if non_numeric:
        raise InvalidData(f"{path}: non-numeric column(s): {', '.join(non_numeric[:5])}")
    return df.to_numpy(dtype=np.float64, na_value=np.nan)


def _row_is_numeric(row: Any) -> bool:
    import pandas as pd

    return bool(pd.to_numeric(row, errors="coerce").notna().all())


def _validate_features(raw: np.ndarray, n_features: int) -> np.ndarray:
    if raw.dtype.kind not in "biuf":
        raise InvalidData(f"features must be numeric, got dtype {raw.dtype}")
    if raw.ndim == 1 and n_features == 1:
        raw = raw.reshape(-1, 1)
    if raw.ndim != 2:
        raise InvalidData(f"features must be a 2-D table, got {raw.ndim} dimension(s)")
    if raw.shape[1] != n_features:
        raise InvalidData(f"features have {raw.shape[1]} columns; the input spec says {n_features}")
    if raw.shape[0] == 0:
        raise InvalidData("features have no rows")
    if not np.all(np.isfinite(raw)):
        raise InvalidData("features contain NaN or infinite values")
    if np.abs(raw).max() > np.finfo(np.float32).max:
        raise InvalidData("features overflow float32")
    return np.ascontiguousarray(raw, dtype=np.float32)


def _validate_labels(raw: np.ndarray, *, n_rows: int, task_type: str, n_classes: int | None) -> np.ndarray:
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 1:
        raise InvalidData(f"labels must be a single column, got shape {raw.shape}")
    if raw.shape[0] != n_rows:
        raise InvalidData(f"{raw.shape[0]} labels for {n_rows} feature rows")
    if raw.dtype.kind not in "biuf":
        raise InvalidData(f"labels must be numeric, got dtype {raw.dtype}")
    values = raw.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise InvalidData("labels contain NaN or infinite values")
    if task_type == "regression":
        return np.ascontiguousarray(values)
    assert n_classes is not None
    if not np.all(values == np.round(values)):
        raise InvalidData("classification labels must be integer class indices")
    labels = values.astype(np.int64)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise InvalidData(f"labels must be class indices in 0..{n_classes - 1}")
    if np.unique(labels).size < 2:
        raise InvalidData("classification labels contain a single class; metrics would be undefined")
    return np.ascontiguousarray(labels)


def _spec(input_spec: Mapping[str, Any], task_type: str | None) -> tuple[str, int, int | None]:
    task_type = task_type or input_spec.get("task_type")
    if task_type not in TASK_TYPES:
        raise InvalidData(f"task type must be one of {TASK_TYPES}, got {task_type!r}")
    n_features = input_spec.get("n_features")
    if isinstance(n_features, bool) or not isinstance(n_features, int) or not 0 < n_features <= MAX_FEATURES:
        raise InvalidData("input_spec.n_features must be a positive integer")
    dtype = input_spec.get("dtype", "float32")
    if dtype != "float32":
        raise InvalidData("input_spec.dtype must be float32")
    n_classes = input_spec.get("n_classes")
    if task_type == "binary_classification":
        if n_classes not in (None, 2):
            raise InvalidData("a binary task has n_classes = 2")
        n_classes = 2
    elif task_type == "multiclass_classification":
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise InvalidData("a multiclass task needs input_spec.n_classes >= 2")
    else:
        n_classes = None
    return task_type, n_features, n_classes


# --- storing ---------------------------------------------------------------------------------


def _save_npy(arr: np.ndarray, dest: Path, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def register_task_data(
    *,
    data_dir: str | os.PathLike[str],
    task_id: int | str,
    features_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    input_spec: Mapping[str, Any],
    task_type: str | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Validate the owner's features and labels, store them, and return the shard metadata.

    ``task_type`` may also come from ``input_spec["task_type"]``. Returns ``task_id``,
    ``row_count``, ``fingerprint``, ``split_sizes`` (``{"test": n}``), ``task_type``,
    ``n_features``, ``n_classes``. Replaces any data stored before for the task's split.

    ``split="train"`` stores the rows for federated fine-tuning apart, under ``train/`` (the
    test split is untouched and never used for training); a seeded ``VALIDATION_FRACTION`` of
    them is held out as validation rows (``split_sizes``: ``{"train": n_fit, "validation": n_val}``).
    """
    if split not in SPLITS:
        raise InvalidData(f"split must be one of {SPLITS}, got {split!r}")
    task_type, n_features, n_classes = _spec(input_spec, task_type)
    root = task_dir(data_dir, task_id)
    if split == "train":
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o711)  # noqa: S103 - traversable, not listable
        root = root / "train"
    features = _validate_features(read_table(Path(features_path)), n_features)
    labels = _validate_labels(
        read_table(Path(labels_path)),
        n_rows=features.shape[0],
        task_type=task_type,
        n_classes=n_classes,
    )
    fp = fingerprint(features, labels, key=site_key(data_dir))
    features_dir, labels_dir = root / "features", root / "labels"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o711)  # noqa: S103 - traversable, not listable
    features_dir.mkdir(exist_ok=True)
    labels_dir.mkdir(exist_ok=True)
    os.chmod(features_dir, 0o755)  # noqa: S103 - the sandbox user (65534) reads features
    os.chmod(labels_dir, 0o700)
    _save_npy(features, features_dir / FEATURES_FILE, 0o644)
    _save_npy(labels, labels_dir / LABELS_FILE, 0o600)
    meta = {
        "task_id": str(task_id),
        "task_type": task_type,
        "n_features": n_features,
        "n_classes": n_classes,
        "row_count": int(features.shape[0]),
        "fingerprint": fp,
        "fingerprint_scheme": FINGERPRINT_SCHEME,
        "split_sizes": {"test": int(features.shape[0])},
    }
    if split == "train":
        if features.shape[0] < MIN_TRAIN_ROWS:
            raise InvalidData(f"a train split needs at least {MIN_TRAIN_ROWS} rows")
        fit, validation = validation_holdout(features.shape[0], seed=VALIDATION_SEED)
        meta.update(
            split="train",
            validation_seed=VALIDATION_SEED,
            split_sizes={"train": int(fit.size), "validation": int(validation.size)},
        )
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".meta-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / "meta.json")
    return meta


def validation_holdout(n_rows: int, *, seed: int = 0, fraction: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n_rows`` train rows into (training rows, validation rows), sorted."""
    fraction = VALIDATION_FRACTION if fraction is None else fraction
    n_val = max(1, int(round(n_rows * fraction)))
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclass(frozen=True)
class TrainData:
    """A task's train split at this site: the training rows and the held-out validation rows."""

    task_id: str
    task_type: str
    n_features: int
    n_classes: int | None
    fingerprint: str
    features: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    fit_rows: np.ndarray = field(repr=False)
    validation_rows: np.ndarray = field(repr=False)

    @property
    def validation_labels(self) -> np.ndarray:
        return self.labels[self.validation_rows]

    def write_sandbox_inputs(self, folder: Path) -> tuple[Path, Path, Path]:
        """Write (training features, training labels, validation features) for a training
        sandbox into ``folder`` (which must be private to the site, e.g. a 0700 work dir); the
        files are world-readable because the sandbox user reads them through bind mounts.
        The validation labels are never written: the agent scores the validation rows."""
        paths = (folder / "train-features.npy", folder / "train-labels.npy", folder / "val-features.npy")
        arrays = (self.features[self.fit_rows], self.labels[self.fit_rows], self.features[self.validation_rows])
        for path, array in zip(paths, arrays, strict=True):
            _save_npy(np.ascontiguousarray(array), path, 0o644)
        return paths


def load_train_data(*, data_dir: str | os.PathLike[str], task_id: int | str) -> TrainData:
    """The stored train split of a task; raises ``DataUnavailable`` if missing or altered."""
    root = task_dir(data_dir, task_id) / "train"
    try:
        meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
        labels = np.load(root / "labels" / LABELS_FILE, allow_pickle=False)
        features = np.load(root / "features" / FEATURES_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataUnavailable(f"no usable train data stored for task {task_id}: {type(exc).__name__}") from None
    if not _matches(meta, data_dir, features, labels):
        raise DataUnavailable(f"stored train data for task {task_id} does not match its fingerprint")
    fit, validation = validation_holdout(int(meta["row_count"]), seed=int(meta.get("validation_seed", 0)))
    return TrainData(
        task_id=str(task_id),
        task_type=meta["task_type"],
        n_features=int(meta["n_features"]),
        n_classes=meta.get("n_classes"),
        fingerprint=meta["fingerprint"],
        features=features,
        labels=labels,
        fit_rows=fit,
        validation_rows=validation,
    )


def load_task_data(
    *, data_dir: str | os.PathLike[str], task_id: int | str, verify: bool = True, pin_dir: Path | None = None
) -> TaskData:
    """The stored shard for a task; raises ``DataUnavailable`` if missing or altered.

    ``pin_dir`` (a private folder of the job): the features file is first copied there and the
    fingerprint is checked on that copy, which is what ``features_path`` names and what the
    sandbox then reads. The job reads the bytes it checked, whatever happens to the site's
    folder meanwhile (the labels are read into memory by the same check)."""
    root = task_dir(data_dir, task_id)
    try:
        meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
        features_path = root / "features" / FEATURES_FILE
        if pin_dir is not None:
            features_path = _pin(features_path, pin_dir)
        labels = np.load(root / "labels" / LABELS_FILE, allow_pickle=False)
        features = np.load(features_path, allow_pickle=False, mmap_mode="r") if verify or pin_dir else None
    except (OSError, ValueError) as exc:
        raise DataUnavailable(f"no usable data stored for task {task_id}: {type(exc).__name__}") from None
    if verify or pin_dir is not None:
        assert features is not None
        if not _matches(meta, data_dir, np.asarray(features), labels):
            raise DataUnavailable(f"stored data for task {task_id} does not match its fingerprint")
    return TaskData(
        task_id=str(task_id),
        task_type=meta["task_type"],
        n_features=int(meta["n_features"]),
        n_classes=meta.get("n_classes"),
        row_count=int(meta["row_count"]),
        fingerprint=meta["fingerprint"],
        features_dir=features_path.parent,
        features_path=features_path,
        labels=labels,
    )


def _pin(src: Path, pin_dir: Path) -> Path:
    """A private copy of ``src`` in ``pin_dir`` (readable by the sandbox user, like the original).
    A copy, not a link: a link would follow the site's file if it were changed in place."""
    pin_dir.mkdir(mode=0o700, exist_ok=True)
    dest = pin_dir / FEATURES_FILE
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DataUnavailable("the stored features are not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as source, open(dest, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    finally:
        os.close(fd)
    dest.chmod(0o644)
    return dest
