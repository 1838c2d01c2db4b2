"""The Gaussian mechanism over a release's statistic blocks, calibrated to its rho.

Each block ``b`` is divided by its sensitivity ``D_b``; the concatenation of the m scaled blocks
then changes by at most ``sqrt(m)`` in L2 norm when one row is replaced, and Gaussian noise of
std ``sqrt(m) / sqrt(2 rho)`` on it is exactly rho-zCDP. Unscaled, block ``b`` gets noise of
std ``sigma_b = D_b * sqrt(m) / sqrt(2 rho)``.

Noised values are snapped to a grid of ``sigma_b / 64`` (a grid far finer than the noise, so
the utility cost is nil): the low-order bits of a floating-point Gaussian sample can otherwise
reveal the value the noise was added to (Mironov 2012). The noise comes from the operating
system's entropy, never from a seed a job could influence.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping

import numpy as np

from evaluator.privacy.statistics import ReleaseSpec
from evaluator.privacy.zcdp import noise_multiplier_for_rho

SNAP_FRACTION = 1 / 64


def noise_scales(spec: ReleaseSpec, rho: float) -> dict[str, float]:
    """Noise std per block for a rho-zCDP release of all the spec's blocks together."""
    z = noise_multiplier_for_rho(rho)
    m = len(spec.blocks)
    return {block: spec.sensitivity(block) * math.sqrt(m) * z for block in spec.blocks}


def gaussian_release(
    spec: ReleaseSpec,
    statistics: Mapping[str, np.ndarray],
    *,
    rho: float,
    rng: np.random.Generator | None = None,
) -> dict[str, list]:
    """The noised statistics as nested lists (JSON-ready)."""
    rng = rng or np.random.default_rng(secrets.randbits(128))
    released: dict[str, list] = {}
    for block, sigma in noise_scales(spec, rho).items():
        exact = np.asarray(statistics[block], dtype=np.float64)
        noised = exact + rng.normal(0.0, sigma, size=exact.shape)
        grid = sigma * SNAP_FRACTION
        released[block] = (np.round(noised / grid) * grid).tolist()
    return released
