"""Counting recovered bits against the planted ones, net of what chance gets.

Each planted secret is a fixed-width integer; a decoded value is compared bit by bit (plain
binary, so a small error near a carry costs several bits: a conservative count). A part the
decoder could not read (``None``) counts half its bits, what a coin flip gets.

Chance is measured, not assumed: the same decoded values scored against the *other* items'
secrets of the same kind (each guess against every other secret, averaged). A decoder that
ignores the observation (a constant, or one fed a coarse "pending") scores as well against
others' secrets as against its own, so it nets 0; a decoder that reads the secret scores far
better against its own. The baseline is the larger of that and a coin flip (half the bits),
so that a few lucky cross-matches do not inflate the figure. ``net_bits = 2 * (correct -
baseline)``: a perfect decoder of uniform secrets gets about ``planted``, a blind one about 0
or below (not clamped: sampling noise can make it negative).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _matching_bits(truth: int, guess: int | None, width: int) -> float:
    if guess is None:
        return width / 2
    return width - bin((int(truth) ^ int(guess)) & ((1 << width) - 1)).count("1")


@dataclass
class Tally:
    channel: str
    submissions: int = 0
    site_jobs: int = 0
    notes: list[str] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    records: list[tuple[str, int, int | None, int]] = field(default_factory=list)

    def add(self, truth: int, guess: int | None, width: int, *, kind: str = "secret") -> float:
        """Adds one secret of ``width`` bits; returns the bits counted correct."""
        self.records.append((kind, int(truth), None if guess is None else int(guess), width))
        return _matching_bits(truth, guess, width)

    @property
    def planted(self) -> int:
        return sum(width for *_, width in self.records)

    @property
    def correct(self) -> float:
        return sum(_matching_bits(t, g, w) for _, t, g, w in self.records)

    @property
    def chance(self) -> float:
        total = 0.0
        for i, (kind, _, guess, width) in enumerate(self.records):
            others = [t for j, (k, t, _, _) in enumerate(self.records) if k == kind and j != i]
            if not others:
                total += width / 2
            else:
                total += sum(_matching_bits(t, guess, width) for t in others) / len(others)
        return total

    @property
    def baseline(self) -> float:
        return max(self.chance, self.planted / 2)

    @property
    def net_bits(self) -> float:
        return 2 * (self.correct - self.baseline)

    def per_job(self, value: float) -> float:
        return value / self.site_jobs if self.site_jobs else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "planted": self.planted,
            "correct": self.correct,
            "chance": round(self.chance, 2),
            "coin_flip": self.planted / 2,
            "net_bits": round(self.net_bits, 2),
            "submissions": self.submissions,
            "site_jobs": self.site_jobs,
            "net_bits_per_site_job": round(self.per_job(self.net_bits), 3),
            "net_bits_per_submission": round(self.net_bits / self.submissions, 3)
            if self.submissions
            else 0.0,
            "notes": self.notes,
            "details": self.details,
        }
