"""The most any attacker can learn of a training row's label from an (epsilon, delta) guarantee.

Record-level DP bounds how well anyone holding the released model (a hostile vendor included)
can name a training row's label, whatever the model and the decoder. Changing a row's label is a
replacement (remove, then add), so it is covered by (2 eps, (1 + e^eps) delta) through group
privacy. For labels y, y' and a decoder's answer sets S_y: P_y(S_y) <= e^{2 eps} P_y'(S_y) + d'.
Summed over y' != y and averaged over a uniform prior on K classes:

    P(correct) <= (e^{2 eps} + (K - 1) d') / (e^{2 eps} + K - 1)

against chance 1/K. benchmarks/federated_label_recovery.py measures a real decoder below it
(docs/privacy-fine-tuning.md).
"""

from __future__ import annotations

import math


def label_guess_bound(epsilon: float, delta: float, n_classes: int) -> float:
    """The highest probability that any decoder names a training row's label (uniform prior over
    ``n_classes``), given a record-level (epsilon, delta) guarantee."""
    if n_classes < 2 or epsilon < 0 or not 0 <= delta < 1:
        raise ValueError("need n_classes >= 2, epsilon >= 0 and 0 <= delta < 1")
    if epsilon > 350:  # e^(2 eps) overflows a float long before: the bound is 1 there
        return 1.0
    e2, d2 = math.exp(2 * epsilon), (1 + math.exp(epsilon)) * delta
    return min(1.0, (e2 + (n_classes - 1) * d2) / (e2 + n_classes - 1))
