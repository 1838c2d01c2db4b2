"""The site side of one round, as one pure pipeline: weights in, the vector to mask out.

``delta = new - old`` (flattened in sorted name order) -> clip to L2 norm C -> add this site's
share of the distributed Gaussian noise (std ``z C / sqrt(m)``) -> optionally quantize to uint32
for secure aggregation. The report is for the site's own ledger; it never goes to the hub (the
norm before clipping says something about the site's data).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from evaluator.federated.updates import (
    Layout,
    clip_l2,
    distributed_noise_std,
    flatten,
    gaussian_noise,
    quantization_range,
    quantize_stochastic,
)


@dataclass(frozen=True)
class SiteUpdateReport:
    norm_before_clip: float
    clipped: bool
    clip_norm: float
    noise_std: float  # this site's std; the sum over n_sites carries noise_multiplier * clip_norm
    noise_multiplier: float
    n_sites: int
    n_params: int
    quantization_bits: int | None
    quantization_range: float | None  # public Q used to quantize, the hub needs the same value
    layout: Layout


def secure_rng() -> np.random.Generator:
    """A numpy Generator seeded with 256 bits from the OS, for noise and stochastic rounding."""
    return np.random.default_rng(secrets.randbits(256))


def prepare_site_update(
    *,
    old_weights: Mapping[str, np.ndarray],
    new_weights: Mapping[str, np.ndarray],
    clip_norm: float,
    noise_multiplier: float,
    n_sites: int,
    rng: np.random.Generator | None = None,
    quantization_bits: int | None = None,
    quantization_sigmas: float = 4.0,
) -> tuple[np.ndarray, SiteUpdateReport]:
    """Flatten the delta, clip it, add distributed noise, and (if ``quantization_bits``) quantize.

    Returns ``(vector, report)``: float64 without quantization, uint32 in ``[0, 2**bits - 1]``
    with it (ready for ``SecAggClient.masked_input``; the hub decodes the sum with
    ``updates.dequantize(..., clip_norm=report.quantization_range, ...)``).
    ``noise_multiplier=0`` means no DP noise. ``rng`` defaults to an OS-seeded generator.
    """
    if set(old_weights) != set(new_weights):
        missing, extra = (
            sorted(set(old_weights) - set(new_weights)),
            sorted(set(new_weights) - set(old_weights)),
        )
        raise ValueError(
            f"new weights must have the same tensors as the old: missing {missing}, extra {extra}"
        )
    for name in old_weights:
        if np.shape(old_weights[name]) != np.shape(new_weights[name]):
            raise ValueError(f"tensor {name!r} changed shape")
    old_vec, layout = flatten(old_weights)
    new_vec, _ = flatten(new_weights)
    rng = rng if rng is not None else secure_rng()

    clipped, norm = clip_l2(new_vec - old_vec, clip_norm)  # refuses NaN/inf deltas
    noise_std = distributed_noise_std(noise_multiplier, clip_norm, n_sites)
    noised = clipped + gaussian_noise(clipped.shape, noise_std, rng)

    q_range = None
    vector = noised
    if quantization_bits is not None:
        q_range = quantization_range(clip_norm, noise_std, sigmas=quantization_sigmas)
        vector = quantize_stochastic(
            noised, clip_norm=q_range, bits=quantization_bits, rng=rng, n_max=n_sites
        )
    report = SiteUpdateReport(
        norm_before_clip=norm,
        clipped=norm > clip_norm,
        clip_norm=clip_norm,
        noise_std=noise_std,
        noise_multiplier=noise_multiplier,
        n_sites=n_sites,
        n_params=layout.size,
        quantization_bits=quantization_bits,
        quantization_range=q_range,
        layout=layout,
    )
    return vector, report
