"""The run's offset ``D_t`` and strategy state as safetensors bytes, and the layout's checks.

Pure functions on numpy arrays and bytes: the hub never loads a vendor artifact, it only builds
``D_t`` from aggregated updates in the layout the sites reported.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from evaluator.federated.updates import Layout
from marketplace.core.errors import DomainError

_NAME_MAX = 512
_MAX_TENSORS = 100_000


def layout_clean(raw: Any, *, max_parameters: int) -> list[list]:
    """``[[name, shape, dtype], ...]`` sorted by name, numeric dtypes, at most ``max_parameters``."""
    if not isinstance(raw, list) or not raw or len(raw) > _MAX_TENSORS:
        raise DomainError("layout must be a non-empty list of [name, shape, dtype].", code="invalid_layout")
    cleaned: list[list] = []
    for item in raw:
        if not isinstance(item, list | tuple) or len(item) != 3:
            raise DomainError("Each layout entry is [name, shape, dtype].", code="invalid_layout")
        name, shape, dtype = item
        if not isinstance(name, str) or not 0 < len(name) <= _NAME_MAX:
            raise DomainError("A tensor name must be a non-empty string.", code="invalid_layout")
        if (
            not isinstance(shape, list | tuple)
            or len(shape) > 16
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape)
        ):
            raise DomainError(f"Tensor {name!r} has an invalid shape.", code="invalid_layout")
        try:
            np_dtype = np.dtype(dtype) if isinstance(dtype, str) else None
        except TypeError:
            np_dtype = None
        if np_dtype is None or not (np.issubdtype(np_dtype, np.number) or np_dtype == np.bool_):
            raise DomainError(f"Tensor {name!r} has a non-numeric dtype.", code="invalid_layout")
        cleaned.append([name, [int(d) for d in shape], np_dtype.str])
    names = [entry[0] for entry in cleaned]
    if names != sorted(names) or len(set(names)) != len(names):
        raise DomainError("Layout names must be unique and sorted.", code="invalid_layout")
    size = sum(math.prod(entry[1]) for entry in cleaned)
    if not 0 < size <= max_parameters:
        raise DomainError(
            f"The model must have between 1 and {max_parameters} parameters.", code="invalid_layout"
        )
    return cleaned


def layout_of(layout: list[list]) -> Layout:
    return Layout.from_dict({"tensors": layout})


def offset_to_bytes(vector: np.ndarray, layout: Layout) -> bytes:
    """``D`` (flat, layout order) as safetensors: float32, one tensor per layout name."""
    vector = np.asarray(vector, dtype=np.float64)
    if vector.shape != (layout.size,):
        raise ValueError(f"offset has shape {vector.shape}, layout needs ({layout.size},)")
    tensors, start = {}, 0
    for spec in layout.tensors:
        tensors[spec.name] = vector[start : start + spec.size].reshape(spec.shape).astype(np.float32)
        start += spec.size
    return st_save(tensors)


def offset_from_bytes(data: bytes, layout: Layout) -> np.ndarray:
    tensors = st_load(data)
    parts = []
    for spec in layout.tensors:
        array = tensors[spec.name]
        if tuple(array.shape) != spec.shape:
            raise ValueError(f"offset tensor {spec.name!r} has shape {array.shape}, expected {spec.shape}")
        parts.append(array.astype(np.float64).ravel())
    return np.concatenate(parts)


def state_to_bytes(state: dict[str, Any]) -> bytes:
    """A strategy's ``state_dict`` (arrays or None) as safetensors; None entries are left out."""
    return st_save({k: np.asarray(v, dtype=np.float64) for k, v in state.items() if v is not None})


def state_from_bytes(data: bytes) -> dict[str, Any]:
    return dict(st_load(data))
