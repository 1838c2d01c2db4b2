"""Distributed DP noise for record-level FedSGD rounds under secure aggregation (issue 10).

Local record-level DP-SGD makes every site's update private on its own: each site adds noise
``sigma C`` to its clipped gradient sums, so the hub's sum of n sites carries ``sqrt(n) sigma C``
of noise -- n times the variance one guarantee needs. Under secure aggregation the hub only sees
sums of at least t (the threshold) sites' inputs, so each site adds a share ``sigma C / sqrt(t)``
and any released sum carries at least ``sigma C``: central-DP signal-to-noise with no trusted
server (Kairouz et al. 2021, "The distributed discrete Gaussian mechanism"; here continuous noise
before the 20-bit quantization). When all n > t sites contribute the sum carries
``sigma sqrt(n / t)``, a little more noise than needed, and the accountant still charges ``sigma``:
dropouts down to the threshold need no extra accounting and every site and the hub show one epsilon.

When it applies (``applies``): the released sum must be LINEAR in each site's noisy gradient
sum, so the round is one full-batch DP-SGD step per site (``sample_rate == 1``, one local epoch:
``steps_per_round == 1``; the site's delta is ``-lr (clipped sum + share) / n_k`` and the hub's
example-weighted mean ``-lr (all sums + all shares) / sum n_k``), the agent's update clip must not
bind, and the aggregation must be secure. With several local steps a site's later steps depend
on its own earlier noisy gradients alone, which carry only the share: there the site must add the
full ``sigma`` (local DP, the default without secure aggregation).

Trust assumption (stated in the docs): every site's rows are protected by ``sigma`` only if at
least t of the sites in the released sum add their shares honestly (the site itself counts); a
site that colludes with the hub and adds no noise removes its share. With k honest contributors
the sum carries ``sigma sqrt(k / t)`` (``contributed_noise_multiplier``): that, not sigma, is the
guarantee if fewer than t are honest. Secure aggregation never releases a sum of fewer than t.
"""

from __future__ import annotations

import math

from evaluator.federated.accounting import steps_per_round


def applies(*, secure_aggregation: bool, sample_rate: float, local_epochs: int) -> bool:
    """True when a record-level round may split its noise across the sites (see the module doc)."""
    return bool(secure_aggregation) and steps_per_round(local_epochs, sample_rate) == 1


def site_noise_share(noise_multiplier: float, threshold: int) -> float:
    """The noise multiplier each site adds so that any sum of ``threshold`` or more sites'
    inputs carries at least ``noise_multiplier``."""
    if threshold < 1 or not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError("need threshold >= 1 and a finite noise_multiplier >= 0")
    return noise_multiplier / math.sqrt(threshold)


def contributed_noise_multiplier(noise_multiplier: float, threshold: int, n_honest: int) -> float:
    """The multiplier a released sum carries when ``n_honest`` shares of ``sigma / sqrt(threshold)``
    are in it (``>= noise_multiplier`` once ``n_honest >= threshold``)."""
    if threshold < 1 or n_honest < 1:
        raise ValueError("need threshold >= 1 and n_honest >= 1")
    return noise_multiplier * math.sqrt(n_honest / threshold)
