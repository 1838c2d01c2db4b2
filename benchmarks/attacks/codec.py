"""The carrier code shared by the hostile models (inside the sandbox) and the decoders (here).

Pure standard library: it is shipped inside the model packages as a sibling of ``model.py``.

A *carrier* row gets a chosen probability, every other row 0.5, so the rows that are not
carriers add exactly ln 2 each to the log loss whatever their labels. The carrier's own loss
carries a code word. The model does not know the carrier's label, so it guesses it (``guess``,
from a classifier trained on the vendor's own data) and puts the code on that guess's side:
it gives the guessed label the probability ``exp(-l)`` with ``l`` in (ln 2, L_MAX), linear in
the code. If the guess is right (most of the time), the row's loss is ``l`` itself: a wide
range, so many levels survive the rounding. If it is wrong, the loss is ``-ln(1 - exp(-l))``,
below ln 2: the two ranges do not overlap, so the decoder knows which case it is in, inverts
either one, and reads the label off the guess bit (the code word's top bit).

A secret is a feature's public percentile (``percentile_code``): roughly uniform over rows, so
each of its bits is a fair coin to someone who only knows the public distribution.
"""

from __future__ import annotations

import bisect
import math

LN2 = math.log(2.0)
L_MAX = 12.0  # -ln(6e-6): far from float32's epsilon, where log_loss would clip


def percentile_code(value: float, quantiles: list[float], bits: int) -> int:
    """``value``'s position in the public distribution (given by its quantiles, evenly spaced
    in probability), as an integer of ``bits`` bits."""
    q = quantiles
    if value <= q[0]:
        u = 0.0
    elif value >= q[-1]:
        u = 1.0
    else:
        i = bisect.bisect_right(q, value) - 1
        span = q[i + 1] - q[i]
        u = (i + ((value - q[i]) / span if span > 0 else 0.0)) / (len(q) - 1)
    levels = 1 << bits
    return min(max(int(math.floor(u * levels)), 0), levels - 1)


def _loss_of(code: int, code_bits: int) -> float:
    return LN2 + (L_MAX - LN2) * (code + 0.5) / (1 << code_bits)


def carrier_probability(secret: int, guess: int, bits: int) -> float:
    """P(class 1) for the carrier row: the code word (guess bit on top of the secret's
    ``bits``) sets the loss the row has if its label is the guess."""
    code = (int(guess) << bits) | int(secret)
    p_guess = math.exp(-_loss_of(code, bits + 1))
    return p_guess if guess == 1 else 1.0 - p_guess


def carrier_decode(loss: float, bits: int) -> tuple[int, int]:
    """(secret, label) from the carrier row's loss (the inverse of ``carrier_probability``)."""
    if loss > LN2:  # the guess was right: the loss is the code's own
        wide, right = loss, True
    else:  # wrong: loss = -ln(1 - exp(-wide))
        wide, right = -math.log(max(1.0 - math.exp(-max(loss, 1e-12)), 1e-300)), False
    levels = 1 << (bits + 1)
    code = int(math.floor((wide - LN2) / (L_MAX - LN2) * levels))
    code = min(max(code, 0), levels - 1)
    guess = code >> bits
    return code & ((1 << bits) - 1), guess if right else 1 - guess
