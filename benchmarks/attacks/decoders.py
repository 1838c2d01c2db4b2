"""Decoders: from what the vendor sees (``vendor_view``) back to secret bits, one per channel.

Each decoder returns its best guess, or ``None`` for a part it has nothing to read from (a
field withheld, a status still "pending"); ``scoring`` counts a ``None`` as a coin flip, so a
closed channel recovers 0 bits net of chance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from attacks.codec import LN2, carrier_decode
from attacks.vendor_view import SubmissionView, Transition

# --- channel 1 (and 5): one carrier row inside a released aggregate log loss --------------------


def carrier_loss_from_aggregate(value: float, *, n_rows: int, n_sites: int, decimals: int) -> float:
    """The carrier row's own loss, from the aggregate: sites without the carrier release
    round(ln 2) exactly; the carrier's site adds its other rows at ln 2 each. The carrier site's
    row count is unknown to the vendor: assume equal shards (the error this makes is n * 5e-5)."""
    n_carrier_site = n_rows / max(n_sites, 1)
    others = (n_rows - n_carrier_site) * round(LN2, decimals)
    return n_rows * value - others - (n_carrier_site - 1) * LN2


def decode_metric_carrier(
    view: SubmissionView,
    *,
    metric: str,
    decimals: int,
    bits: int,
    known_rows: int | None = None,
    known_sites: int | None = None,
) -> tuple[int | None, int | None]:
    """(secret, label) of the target row from the released aggregate, or (None, None).

    Row and site counts come from the view, else from ``known_*`` (what the vendor may have
    learned elsewhere: the replay gives it the truth, so a hidden count does not pass for a
    closed channel)."""
    n_rows = view.n_rows or known_rows
    n_sites = view.n_sites or known_sites or 1
    if not view.metrics or metric not in view.metrics or not n_rows:
        return None, None
    value = view.metrics[metric]
    if value is None or not math.isfinite(value):
        return None, None
    loss = carrier_loss_from_aggregate(
        float(value), n_rows=int(n_rows), n_sites=int(n_sites), decimals=decimals
    )
    return carrier_decode(loss, bits)


# --- channel 4: per-site values ---------------------------------------------------------------


def per_site_values(view: SubmissionView, metric: str) -> dict[str, tuple[float, int | None]]:
    """{site: (value, n_rows)} from whatever per-site field the vendor sees (leaderboard
    per_site, or a job's result)."""
    found: dict[str, tuple[float, int | None]] = {}
    for entry in view.per_site or []:
        value = (entry.get("metrics") or {}).get(metric)
        if entry.get("site") is not None and value is not None:
            found[str(entry["site"])] = (float(value), entry.get("n_rows"))
    for job in view.jobs:
        if job.site is not None and job.metrics and metric in job.metrics and job.site not in found:
            found[job.site] = (float(job.metrics[metric]), job.n_rows)
    return found


def decode_per_site_carriers(
    view: SubmissionView, *, sites: Sequence[str], metric: str, bits: int, default_rows: int
) -> dict[str, tuple[int | None, int | None]]:
    """Per site: (secret, label) of that site's carrier row from its own released value."""
    values = per_site_values(view, metric)
    decoded: dict[str, tuple[int | None, int | None]] = {}
    for site in sites:
        if site not in values:
            decoded[site] = (None, None)
            continue
        value, n_rows = values[site]
        n = int(n_rows or default_rows)
        decoded[site] = carrier_decode(n * value - (n - 1) * LN2, bits)
    return decoded


# --- channel 2: the outcome of each site's job --------------------------------------------------

FAILURE_CODES = {"crashed": 1, "invalid_output": 2, "out_of_memory": 3}


def _outcome_code(status: str | None, reason: str | None) -> int | None:
    if status in ("succeeded", "scored"):
        return 0
    if status == "failed":
        return FAILURE_CODES.get(reason or "")  # a coarse "failed" or another reason: no guess
    return None


def decode_failures(view: SubmissionView, *, sites: Sequence[str]) -> dict[str, int | None]:
    """Per site: the 2-bit code the model chose, from that site's job status and reason; with
    no per-site jobs, the submission's own status and reason stand for every site."""
    by_site = {job.site: job for job in view.jobs if job.site is not None}
    decoded: dict[str, int | None] = {}
    for site in sites:
        job = by_site.get(site)
        if job is not None:
            decoded[site] = _outcome_code(job.status, job.reason)
        elif view.status == "scored":
            decoded[site] = 0  # every site succeeded
        else:
            decoded[site] = _outcome_code(view.status, view.reason)
    return decoded


# --- channel 3: how long each site's job ran, as seen by polling --------------------------------

DONE = ("succeeded", "failed", "scored", "rejected")


def _duration(transitions: list[Transition], start: float) -> float | None:
    """From the first "running" (else ``start``) to the first terminal status."""
    begin = next((t.at for t in transitions if t.status == "running"), start)
    end = next((t.at for t in transitions if t.status in DONE), None)
    return None if end is None else end - begin


def observed_durations(record: Mapping[str, Any], *, sites: Sequence[str]) -> dict[str, float | None]:
    """Per site: seconds its job ran as the vendor saw it; with no per-site transitions, the
    submission's own time from upload to done stands for every site."""
    whole = _duration(record["submission"], record["uploaded_at"])
    out: dict[str, float | None] = {}
    for site in sites:
        transitions = record["sites"].get(site)
        out[site] = _duration(transitions, record["uploaded_at"]) if transitions else whole
    return out


def decode_timing(
    durations: Mapping[str, float | None],
    baseline: Mapping[str, float | None],
    *,
    step: float,
    levels: int = 4,
) -> dict[str, int | None]:
    """Per site: the number of sleep steps, against the calibration job's duration."""
    out: dict[str, int | None] = {}
    for site, seconds in durations.items():
        base = baseline.get(site)
        if seconds is None or base is None:
            out[site] = None
            continue
        out[site] = min(max(round((seconds - base) / step), 0), levels - 1)
    return out
