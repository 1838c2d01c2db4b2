"""The host's side of compiled models: read a conversion defensively, keep it for later jobs.

A scikit-learn job's sandbox may leave, beside its predictions, ``compiled/spec.json`` and
``compiled/weights.safetensors``: a numpy-only form of the model (``evaluator/runner/compiled.py``).
Later jobs of the same artifact on the same shard then run that form in a fresh sandbox that
imports numpy only (about 0.15 CPU-s instead of about 1.2 for scikit-learn).

Why this gives a hostile vendor nothing new:

- the pickle is still loaded only inside a sandbox; the conversion runs in the first job's
  sandbox, and what it writes is untrusted data: read like the predictions (``lstat``, regular
  file, one link, ``O_NOFOLLOW``, size capped), the JSON parsed into a fixed schema (ops from an
  allow-list, tensor names, dtypes float32/float64, shapes that fit the shard's feature count,
  finite values), the tensors parsed by safetensors' reader (no pickle), and both written again
  by the host (``write``): a later sandbox receives the host's canonical files, nothing vendor-
  shaped but numbers;
- the later job still runs in a fresh container with the same profile; the form computes a fixed
  family of functions of the features (scalers, an affine map, expit or softmax), strictly less
  than the pickle itself could compute in that job;
- the numbers may carry what the first job's model saw: that shard's features (never labels:
  they never enter an evaluation sandbox). A form is therefore used only for the same artifact
  (sha256), the same verified shard file (its path, inode, size and mtime: ``features_identity``) and
  the same runner image, within one agent's life: it only ever meets features that the same
  artifact sees in every one of its jobs. Nothing crosses tasks, shards, artifacts or sites, and
  nothing of it leaves the site except through the job's usual, accounted release;
- whether a form exists is visible to the vendor only as a faster job (about a second less);
  a pickle can already vary its own run time by far more than that in every job, so this adds no
  channel the job's timing did not already carry (SECURITY.md section 3).

A form that fails any check is refused: the job itself is unaffected (its predictions are read as
always) and later jobs keep the normal path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final

import numpy as np

from evaluator.outputs import read_capped
from evaluator.runner.compiled import (
    HEAD_OPS,
    MAX_SPEC_BYTES,
    MAX_WEIGHTS_BYTES,
    SPEC_NAME,
    STEP_OPS,
    VERSION,
    WEIGHTS_NAME,
)

log = logging.getLogger(__name__)

COMPILED_NAME: Final = "compiled"  # the folder a conversion leaves in the output folder
MAX_STEPS: Final = 8
MAX_OUTPUTS: Final = 1024  # classes or regression targets
MAX_ENTRIES: Final = 64  # forms kept per agent (least recently used go first)


class CompiledRefused(Exception):
    """What the sandbox left is not an acceptable compiled form."""


def _tensor(tensors: dict[str, np.ndarray], name: Any, shapes: tuple[tuple[int, ...], ...]) -> str:
    if not isinstance(name, str) or name not in tensors:
        raise CompiledRefused("a tensor the spec names is missing")
    array = tensors[name]
    if array.dtype not in (np.float32, np.float64):
        raise CompiledRefused(f"tensor {name!r} has dtype {array.dtype}")
    if array.shape not in shapes:
        raise CompiledRefused(f"tensor {name!r} has shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise CompiledRefused(f"tensor {name!r} is not finite")
    return name


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CompiledRefused("a number in the spec is not a finite number")
    return float(value)


def check(spec: Any, tensors: dict[str, np.ndarray], *, n_features: int) -> dict[str, Any]:
    """The spec rebuilt from its checked fields only; raises ``CompiledRefused``."""
    if not isinstance(spec, dict) or spec.get("version") != VERSION or spec.get("n_features") != n_features:
        raise CompiledRefused("not a compiled form of this version for this shard")
    steps = spec.get("steps")
    head = spec.get("head")
    if not isinstance(steps, list) or len(steps) > MAX_STEPS or not isinstance(head, dict):
        raise CompiledRefused("bad steps or head")
    used: set[str] = set()
    clean_steps = []
    for step in steps:
        op = step.get("op") if isinstance(step, dict) else None
        if op not in STEP_OPS:
            raise CompiledRefused("a step that is not on the allow-list")
        tensor_fields, other_fields = STEP_OPS[op]
        if set(step) - {"op", *tensor_fields, *other_fields}:
            raise CompiledRefused("unknown fields in a step")
        clean: dict[str, Any] = {"op": op}
        for field in tensor_fields:
            if field in step or op != "standard_scaler":
                clean[field] = _tensor(tensors, step.get(field), ((n_features,),))
                used.add(clean[field])
        for field in other_fields:
            value = step.get(field)
            clean[field] = (value if isinstance(value, bool) else None) if field == "clip" else _number(value)
            if clean[field] is None:
                raise CompiledRefused("clip must be true or false")
        clean_steps.append(clean)
    op = head.get("op")
    if op not in HEAD_OPS or set(head) != {"op", "coef", "intercept"}:
        raise CompiledRefused("a head that is not on the allow-list")
    coef = tensors.get(head["coef"]) if isinstance(head["coef"], str) else None
    k = coef.shape[0] if coef is not None and coef.ndim == 2 else 1
    if not 1 <= k <= MAX_OUTPUTS:
        raise CompiledRefused("too many outputs")
    coef_shapes: tuple[tuple[int, ...], ...] = ((k, n_features),) if op != "linear" else ((n_features,), (k, n_features))
    intercept_shapes: tuple[tuple[int, ...], ...] = ((k,),) if op != "linear" else ((), (1,), (k,))
    if op == "logistic_binary" and k != 1 or op == "logistic_softmax" and k < 3:
        raise CompiledRefused("the head's shape does not fit its kind")
    clean_head = {
        "op": op,
        "coef": _tensor(tensors, head["coef"], coef_shapes),
        "intercept": _tensor(tensors, head["intercept"], intercept_shapes),
    }
    used |= {clean_head["coef"], clean_head["intercept"]}
    if used != set(tensors):
        raise CompiledRefused("tensors the spec does not use")
    return {"version": VERSION, "n_features": n_features, "steps": clean_steps, "head": clean_head}


def read(folder: Path, *, n_features: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The checked (spec, tensors) a sandbox left in ``folder``; raises ``CompiledRefused``."""
    from safetensors.numpy import load

    from evaluator.sandbox import InvalidOutput

    try:
        st = os.lstat(folder)
        if not os.path.isdir(folder) or os.path.islink(folder) or st.st_nlink < 2:
            raise CompiledRefused("not a folder")
        if sorted(os.listdir(folder)) != sorted([SPEC_NAME, WEIGHTS_NAME]):
            raise CompiledRefused("unexpected files")
        raw_spec = read_capped(folder / SPEC_NAME, MAX_SPEC_BYTES, "the compiled spec")
        raw_weights = read_capped(folder / WEIGHTS_NAME, MAX_WEIGHTS_BYTES, "the compiled weights")
    except (OSError, InvalidOutput) as exc:
        raise CompiledRefused(str(exc)) from None
    try:
        spec = json.loads(raw_spec)
        tensors = dict(load(raw_weights))
    except Exception as exc:  # malformed JSON or safetensors: refused, whatever the parser says
        raise CompiledRefused(f"unreadable: {type(exc).__name__}") from None
    clean = check(spec, tensors, n_features=n_features)
    return clean, {name: np.ascontiguousarray(array) for name, array in tensors.items()}


def write(folder: Path, spec: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """The host's own files of a checked form, readable by the sandbox user."""
    from safetensors.numpy import save

    folder.mkdir(mode=0o755)
    (folder / SPEC_NAME).write_bytes(json.dumps(spec, sort_keys=True).encode())
    (folder / WEIGHTS_NAME).write_bytes(save(tensors))
    for name in (SPEC_NAME, WEIGHTS_NAME):
        (folder / name).chmod(0o644)
    folder.chmod(0o755)


def features_identity(path: Path) -> tuple[str | int, ...]:
    """The shard file as the cache knows it. Not its ctime: staging hard-links it into each job's
    folder, which changes the ctime (and the link count) of the same, unchanged file."""
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def n_features_of(path: Path) -> int:
    """The column count from a trusted ``.npy`` file's header (the site's verified shard)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(fh)  # the header only, not the data
    if len(shape) != 2:
        raise ValueError("features must be a 2-D array")
    return int(shape[1])


class CompiledCache:
    """Checked compiled forms of one agent, by (artifact, shard file, runner image)."""

    def __init__(self, root: Path, max_entries: int = MAX_ENTRIES) -> None:
        self.root = root
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(*, model_path: Path, features_path: Path, image_id: str) -> str:
        digest = hashlib.sha256()
        with open(model_path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(json.dumps([features_identity(features_path), image_id]).encode())
        return digest.hexdigest()

    def get(self, key: str) -> Path | None:
        with self._lock:
            folder = self._entries.get(key)
            if folder is not None:
                self._entries.move_to_end(key)
            return folder

    def store(self, key: str, left: Path, *, n_features: int) -> bool:
        """Check what a sandbox left in ``left`` and keep the host's copy. Never raises for a bad
        form (refused and logged); ``left`` is removed either way."""
        try:
            spec, tensors = read(left, n_features=n_features)
        except CompiledRefused as exc:
            log.warning("compiled form refused: %s", exc)
            return False
        finally:
            shutil.rmtree(left, ignore_errors=True)
        self.root.mkdir(mode=0o700, exist_ok=True)
        folder = self.root / uuid.uuid4().hex
        write(folder, spec, tensors)
        with self._lock:
            old = self._entries.pop(key, None)
            self._entries[key] = folder
            dropped = [old] if old is not None else []
            while len(self._entries) > self.max_entries:
                dropped.append(self._entries.popitem(last=False)[1])
        for path in dropped:  # a job may still be staging it: staged inputs are hard links
            shutil.rmtree(path, ignore_errors=True)
        return True
