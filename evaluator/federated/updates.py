"""Pure functions on flat update vectors: flatten, clip, noise, quantize.

A site's update is ``new_weights - old_weights`` for every named tensor, flattened in sorted name
order into one float64 vector. Everything that protects the update (clipping, noise, quantization
for secure aggregation) is a function of that vector alone, so each piece is tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: Secure aggregation sums integers modulo 2**32 (see ``secagg``); quantization must not wrap it.
MODULUS_BITS = 32
MODULUS = 1 << MODULUS_BITS


# --------------------------------------------------------------------------- flatten / unflatten


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype string, e.g. "<f4"

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Layout:
    """Where each named tensor lives in the flat vector (sorted by name, C order)."""

    tensors: tuple[TensorSpec, ...]

    @property
    def size(self) -> int:
        return sum(spec.size for spec in self.tensors)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.tensors)

    def to_dict(self) -> dict:
        return {"tensors": [[s.name, list(s.shape), s.dtype] for s in self.tensors]}

    @classmethod
    def from_dict(cls, data: Mapping) -> Layout:
        return cls(
            tuple(
                TensorSpec(str(n), tuple(int(d) for d in shape), str(dt)) for n, shape, dt in data["tensors"]
            )
        )


def flatten(named_tensors: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Layout]:
    """Concatenate ``name -> array`` (safetensors style) in sorted name order into float64."""
    if not named_tensors:
        raise ValueError("nothing to flatten: no tensors")
    specs = []
    parts = []
    for name in sorted(named_tensors):
        array = np.asarray(named_tensors[name])
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"tensor {name!r} has non-numeric dtype {array.dtype}")
        specs.append(TensorSpec(name, tuple(int(d) for d in array.shape), array.dtype.str))
        parts.append(array.astype(np.float64, copy=False).ravel())
    return np.concatenate(parts), Layout(tuple(specs))


def unflatten(vector: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """Inverse of ``flatten``: the original names, shapes and dtypes (integers are rounded)."""
    vector = np.asarray(vector)
    if vector.ndim != 1 or vector.size != layout.size:
        raise ValueError(f"vector has shape {vector.shape}, layout needs ({layout.size},)")
    out: dict[str, np.ndarray] = {}
    offset = 0
    for spec in layout.tensors:
        chunk = vector[offset : offset + spec.size].reshape(spec.shape)
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
            chunk = np.rint(chunk)
        out[spec.name] = chunk.astype(dtype)
        offset += spec.size
    return out


# --------------------------------------------------------------------------- clipping and noise


def l2_norm(vector: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(vector, dtype=np.float64)))


def clip_l2(update: np.ndarray, max_norm: float) -> tuple[np.ndarray, float]:
    """Scale ``update`` down to L2 norm ``max_norm`` if it is longer; return (clipped, norm before).

    A vector already within the bound is returned unchanged (a float64 copy). Non-finite input
    is refused: ``NaN`` would otherwise slip through the comparison unclipped.
    """
    if not max_norm > 0 or not math.isfinite(max_norm):
        raise ValueError(f"max_norm must be a positive finite number, got {max_norm!r}")
    update = np.array(update, dtype=np.float64)
    if not np.all(np.isfinite(update)):
        raise ValueError("update has non-finite values (NaN or inf); refusing to clip it")
    norm = l2_norm(update)
    if norm > max_norm:
        update *= max_norm / norm
        # Guard the last ulp: the scaled norm must never exceed the bound.
        scaled = l2_norm(update)
        if scaled > max_norm:
            update *= np.nextafter(max_norm / scaled, 0.0)
    return update, norm


def distributed_noise_std(noise_multiplier: float, clip_norm: float, n_sites: int) -> float:
    """Per-site Gaussian std ``z * C / sqrt(m)``: the sum over m sites then has std ``z * C``.

    If only k < m sites contribute, the sum's std is ``z * C * sqrt(k / m)``; account with
    ``accounting.effective_noise_multiplier``.
    """
    if noise_multiplier < 0 or clip_norm <= 0:
        raise ValueError("noise_multiplier must be >= 0 and clip_norm > 0")
    if n_sites < 1:
        raise ValueError("n_sites must be >= 1")
    return noise_multiplier * clip_norm / math.sqrt(n_sites)


def gaussian_noise(shape: int | tuple[int, ...], std: float, rng: np.random.Generator) -> np.ndarray:
    """Samples of N(0, std^2), float64. ``rng`` should be seeded from ``secrets`` on a site."""
    if not std >= 0 or not math.isfinite(std):
        raise ValueError(f"std must be a finite number >= 0, got {std!r}")
    if std == 0:
        return np.zeros(shape, dtype=np.float64)
    return rng.normal(0.0, std, size=shape)


# --------------------------------------------------------------------------- quantization


def max_bits_for_sites(n_max: int) -> int:
    """Largest ``bits`` such that a sum of ``n_max`` quantized values never wraps mod 2**32."""
    if n_max < 1:
        raise ValueError("n_max must be >= 1")
    return MODULUS_BITS - math.ceil(math.log2(n_max))


def quantization_range(clip_norm: float, noise_std: float, *, sigmas: float = 4.0) -> float:
    """A public range ``Q`` for ``quantize_stochastic``: a clipped coordinate is at most ``C`` in
    magnitude; after noise it exceeds ``C + sigmas * std`` with probability < 1e-4 per coordinate
    for the default (those are clamped, see ``quantize_stochastic``). Every site and the hub must
    use the same value, so it is computed from public parameters only."""
    return clip_norm + sigmas * noise_std


def _levels(bits: int) -> int:
    if not isinstance(bits, int) or not 1 <= bits <= MODULUS_BITS - 1:
        raise ValueError(f"bits must be an integer in [1, {MODULUS_BITS - 1}], got {bits!r}")
    return (1 << bits) - 1


def quantize_stochastic(
    vector: np.ndarray,
    *,
    clip_norm: float,
    bits: int,
    rng: np.random.Generator,
    n_max: int | None = None,
) -> np.ndarray:
    """Map each value in ``[-clip_norm, clip_norm]`` to an integer in ``[0, L]``, ``L = 2**bits - 1``,
    with unbiased stochastic rounding; returns ``uint32``.

    Scaling: ``s = (x + Q) * L / (2Q)`` with ``Q = clip_norm``; ``q = floor(s) + Bernoulli(s - floor(s))``,
    so ``E[q] = s`` exactly (unbiased) and ``|q - s| < 1``, i.e. the per-value error after
    ``dequantize`` is below one step ``2Q / L`` and has variance at most ``step**2 / 4``.
    Values outside ``[-Q, Q]`` (possible after noise is added) are clamped first: that is
    post-processing of an already noised value, so it costs no privacy, but it is biased for those
    coordinates; pick ``Q`` with ``quantization_range``.

    No wrap: a sum of n values lies in ``[0, n * L]``, and ``n * L < 2**32`` whenever
    ``bits <= 32 - ceil(log2(n))`` (``max_bits_for_sites``). Pass ``n_max`` to check it here.
    """
    levels = _levels(bits)
    if not clip_norm > 0 or not math.isfinite(clip_norm):
        raise ValueError(f"clip_norm must be a positive finite number, got {clip_norm!r}")
    if n_max is not None and bits > max_bits_for_sites(n_max):
        raise ValueError(
            f"{bits} bits wrap a sum of {n_max} values mod 2**32; use <= {max_bits_for_sites(n_max)}"
        )
    x = np.asarray(vector, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("vector has non-finite values")
    scaled = (np.clip(x, -clip_norm, clip_norm) + clip_norm) * (levels / (2.0 * clip_norm))
    floor = np.floor(scaled)
    q = floor + (rng.random(size=x.shape) < (scaled - floor))
    return np.clip(q, 0, levels).astype(np.uint32)


def dequantize(int_sum: np.ndarray, *, clip_norm: float, bits: int, n_summed: int) -> np.ndarray:
    """Inverse map for a sum of ``n_summed`` quantized values: an estimate of the sum of the inputs.

    ``sum_x ~= int_sum * 2Q / L - n * Q``. For inputs within ``[-Q, Q]`` the error is unbiased and
    at most ``n_summed * 2Q / L`` per coordinate (std at most ``sqrt(n_summed) * Q / L``).
    """
    levels = _levels(bits)
    if n_summed < 1:
        raise ValueError("n_summed must be >= 1")
    if n_summed * levels >= MODULUS:
        raise ValueError(f"a sum of {n_summed} values of {bits} bits may have wrapped mod 2**32")
    ints = np.asarray(int_sum).astype(np.int64)
    return ints * (2.0 * clip_norm / levels) - n_summed * clip_norm


def quantization_error_bound(*, clip_norm: float, bits: int, n_summed: int) -> float:
    """Worst-case absolute per-coordinate error of ``dequantize`` on a sum of in-range values."""
    return n_summed * 2.0 * clip_norm / _levels(bits)
