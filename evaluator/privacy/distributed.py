"""Distributed DP noise for record-level FedSGD rounds under secure aggregation (issue 10).

Local record-level DP-SGD makes every site's update private on its own: each site adds noise
``sigma C`` to its clipped gradient sums, so the hub's sum of n sites carries ``sqrt(n) sigma C``
of noise -- n times the variance one guarantee needs. Under secure aggregation the hub only sees
the sum, so each site can add a share ``sigma C / sqrt(n)`` and the sum still carries ``sigma C``:
central-DP signal-to-noise with no trusted server (Kairouz et al. 2021, "The distributed discrete
Gaussian mechanism"; here continuous noise before the 20-bit quantization).

When it applies (``applies``): the released sum must be LINEAR in each site's noisy gradient
sum, so the round is one full-batch DP-SGD step per site (``sample_rate == 1``, one local epoch:
``steps_per_round == 1``; the site's delta is ``-lr (clipped sum + share) / n_k`` and the hub's
example-weighted mean ``-lr (all sums + all shares) / sum n_k``), the agent's update clip must not
bind, and the aggregation must be secure. With several local steps a site's later steps depend
on its own earlier noisy gradients alone, which carry only the share: there the site must add the
full ``sigma`` (local DP, the default without secure aggregation).

Trust assumption (stated in the docs): every site's rows are protected by ``sigma`` only if the
OTHER contributing sites add their shares honestly; a site that colludes with the hub and adds no
noise lowers everyone's noise to the honest sites' shares. Dropouts lower it too: the sum of k of
n shares carries ``sigma sqrt(k / n)``, so the hub and every site account each round with the
multiplier of the sites that actually contributed (``contributed_noise_multiplier``; the secure
aggregation threshold t bounds it from below by ``sigma sqrt(t / n)`` before the round is run).
"""

from __future__ import annotations

import math

from evaluator.federated.accounting import effective_noise_multiplier, steps_per_round


def applies(*, secure_aggregation: bool, sample_rate: float, local_epochs: int) -> bool:
    """True when a record-level round may split its noise across the sites (see the module doc)."""
    return bool(secure_aggregation) and steps_per_round(local_epochs, sample_rate) == 1


def site_noise_share(noise_multiplier: float, n_sites: int) -> float:
    """The noise multiplier each of ``n_sites`` sites adds so that their sum carries ``noise_multiplier``."""
    if n_sites < 1 or not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError("need n_sites >= 1 and a finite noise_multiplier >= 0")
    return noise_multiplier / math.sqrt(n_sites)


def contributed_noise_multiplier(noise_multiplier: float, n_sites: int, n_contributors: int) -> float:
    """The multiplier the released sum carries when only ``n_contributors`` of ``n_sites`` shares
    are in it: what the accountant charges for the round (worst case before it: the threshold)."""
    return effective_noise_multiplier(noise_multiplier, n_sites, n_contributors)
