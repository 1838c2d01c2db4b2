"""The update bound of a record-level run: what DP-SGD itself guarantees, so the agent's clip
never cuts an honest update (issue 10).

A site's record-level round is ``steps`` DP-SGD steps, each ``-lr (sum of clipped per-row
gradients + N(0, (sigma C)^2 I_d)) / (q n_k)`` (``evaluator.runner.dpsgd``: the denominator is the
expected batch ``q n_k``). The clipped sum has norm at most ``n_k C`` (a batch has at most n_k
rows) and the noise norm is below ``sigma C (sqrt(d) + 8)`` but with probability < e^-32, so each
step moves the weights by at most ``lr C (1 + sigma (sqrt(d) + 8) / n_k) / q``; steps add, and
example weighting only scales the update down (``n_k / cap <= 1``). With ``n_k`` at least the
smallest site's fit rows and ``d`` at most the hub's parameter limit the bound holds for every
site and every model the hub accepts.

Why it matters: at lr 3 a FedSGD update reaches norm 1.4-1.6 (BENCHMARKS, issue 10), so the task
default bound 1.0 would cut it -- a smaller step and, under distributed noise, a non-linear map
of the site's noisy sum, which the sigma guarantee of the released sum assumes is linear.

The hub computes the bound once at approval and sends it as the run's ``clip_norm``: the sites
clip at it. At approval the hub does not know the model's size, so ``d`` is its parameter limit
(20 M: sqrt(d) = 4,472, a bound of about 63 at the FedSGD defaults). From round 0 on it knows ``d``
(the layout every site reported): its check of each update, or of an unmasked sum of ``k``
updates, then uses the bound with the real ``d`` (about 4 for the 4,090-parameter MNIST-1D CNN:
2.5x an honest update, not 40x). For a sum the clipped parts add (``k`` of them) and the sites'
independent noises add in quadrature (``sqrt(k)``).
"""

from __future__ import annotations

import math

NOISE_SIGMAS = 8.0  # ||N(0, I_d)|| < sqrt(d) + 8 but with probability < e^-32


def record_level_update_bound(
    *,
    learning_rate: float,
    steps: int,
    sample_rate: float,
    example_clip_norm: float,
    noise_multiplier: float,
    min_rows: int,
    n_parameters: int,
    n_sites: int = 1,
) -> float:
    """The largest norm an honest site's record-level round update can have, or the sum of
    ``n_sites`` such updates (module doc).

    ``noise_multiplier`` is the sigma each site adds itself (its share under distributed noise)."""
    if not (learning_rate > 0 and steps >= 1 and 0 < sample_rate <= 1 and example_clip_norm > 0):
        raise ValueError("need learning_rate > 0, steps >= 1, 0 < sample_rate <= 1 and example_clip_norm > 0")
    if noise_multiplier < 0 or min_rows < 1 or n_parameters < 1 or n_sites < 1:
        raise ValueError("need noise_multiplier >= 0 and min_rows, n_parameters, n_sites >= 1")
    noise = noise_multiplier * math.sqrt(n_sites) * (math.sqrt(n_parameters) + NOISE_SIGMAS) / min_rows
    return steps * learning_rate * example_clip_norm * (n_sites + noise) / sample_rate
