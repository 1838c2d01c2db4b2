"""One round of a fine-tuning run on the hub: phase posts, advancement, aggregation.

Phases (docs/federated-protocol.md): ``layout`` (round 0 only), then with secure aggregation
``keys -> shares -> masked -> unmask``, without it ``update``. A phase closes when every site
expected in it has posted, or when ``round_timeout_seconds`` has passed (the beat task), with
whoever answered. Every transition happens under ``select_for_update`` on the run row, so
concurrent posts from several sites and a beat run at the same moment serialize.

What the hub holds: public keys, ciphertexts it cannot read, masked vectors and revealed shares
-- only until the round is aggregated or fails, then those rows are deleted -- and ``D_t``. With
secure aggregation it never has an individual unmasked update: ``server_unmask`` yields the sum.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.utils import timezone

from evaluator.federated import robust
from evaluator.federated.secagg import (
    PRIME,
    AdvertisedKeys,
    RoundParams,
    SecAggError,
    UnmaskResponse,
    server_unmask,
)
from evaluator.federated.strategies import Strategy, get_strategy, mean_update
from evaluator.federated.updates import dequantize, distributed_noise_std, quantization_range
from marketplace.audit.services import audit_record
from marketplace.core.errors import Conflict, DomainError, NotFound
from marketplace.egress.models import EgressKind
from marketplace.egress.receipts import canonical_json
from marketplace.egress.services import egress_receipt_verify, egress_record_create
from marketplace.finetuning.models import (
    FineTuningRun,
    MessageKind,
    Participant,
    Phase,
    PrivacyUnit,
    ProtocolMessage,
    RoundRecord,
    RoundStatus,
    RunStatus,
    StrategyName,
)
from marketplace.finetuning.offsets import (
    layout_clean,
    layout_of,
    offset_from_bytes,
    offset_to_bytes,
    state_from_bytes,
    state_to_bytes,
)
from marketplace.finetuning.privacy import record_level_norm_bound
from marketplace.finetuning.services import (
    FEDPROX_DEFAULT_MU,
    MAX_FAILED_ROUNDS,
    has_noise,
    is_record_level,
    min_contributors,
    next_round_allowed,
    privacy_ledger,
    round_step_noise,
    run_end,
    run_finish,
)
from marketplace.finetuning.waiting import notify_changed, run_version
from marketplace.jobs.models import TERMINAL_STATUSES, JobStatus
from marketplace.jobs.services import LeaseLost
from marketplace.sites.models import Site

_KEY_BYTES = 32
_NONCE_BYTES = 12
_BUNDLE_BYTES = 8 + 2 * 66 + 16  # header + two 66-byte shares + GCM tag
_MAX_VALIDATION_METRICS = 16
_NORM_TOLERANCE = 1e-5  # float32 rounding of a vector clipped to C in float64
_NOISE_SIGMAS = 8.0  # ||N(0, s^2 I_d)|| < s (sqrt(d) + 8) but with probability < e^-32


def update_norm_bound(run: FineTuningRun, n: int, k: int = 1) -> float:
    """The largest norm an honest sum of ``k`` site updates can have: k clipped updates plus the
    sum of their site-level noise shares (zero under record-level DP, whose noise is inside C)."""
    d = _vector_length(run)
    sigma = distributed_noise_std(site_noise_multiplier(run), float(run.clip_norm), n)
    loose = k * float(run.clip_norm) * (1 + _NORM_TOLERANCE) + math.sqrt(k) * sigma * (math.sqrt(d) + _NOISE_SIGMAS)
    # Record-level DP-SGD with the model's real size known (round 0 fixed the layout): the clip
    # norm approval sent assumed a 20 M-parameter model; the real bound is often 10x tighter.
    tight = record_level_norm_bound(run, k=k)
    return loose if tight is None else min(loose, tight * (1 + _NORM_TOLERANCE))


#: ``D_r`` up to this size travels inside the state (phases keys/update), bigger ones are downloaded.
INLINE_OFFSET_BYTES = 64 * 1024

#: No site trains on more rows than this in one sandbox; the hub does not know the sites' train
#: splits (DataShard counts the test rows), so this is the bound on a released ``n_examples``.
MAX_SITE_TRAIN_ROWS = 100_000_000


# --------------------------------------------------------------------------- small helpers


def _b64(value: Any, field: str, *, length: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise DomainError(f"{field} must be a base64 string.", code="invalid_message")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DomainError(f"{field} is not valid base64.", code="invalid_message") from None
    if length is not None and len(data) != length:
        raise DomainError(f"{field} must be {length} bytes, got {len(data)}.", code="invalid_message")
    return data


def _b64s(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _finite(value: Any, field: str, *, low: float = -math.inf, allow_null: bool = False) -> float | None:
    if value is None and allow_null:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < low
    ):
        raise DomainError(f"{field} must be a finite number >= {low}.", code="invalid_message")
    return float(value)


# The reads every federated request makes, as plain SQL: the ORM spent longer building these
# queries than the database answering them (~1.5 ms each on the loaded 2-core machine, vs 0.3 ms).
_PARTICIPANTS_SQL = (
    "SELECT p.id, p.run_id, p.site_id, p.number, p.job_id, j.status AS job_status,"
    " j.lease_holder AS job_lease_holder, s.name AS site_name"
    " FROM finetuning_participant p JOIN jobs_job j ON j.id = p.job_id JOIN sites_site s ON s.id = p.site_id"
    " WHERE p.run_id = %s ORDER BY p.number"
)
_RUN_SQL = "SELECT * FROM finetuning_finetuningrun WHERE id = %s"
_POSTED_SQL = (
    "SELECT participant_id, body_sha256 FROM finetuning_protocolmessage"
    " WHERE run_id = %s AND round = %s AND attempt = %s AND kind = %s"
)


def participants_of(run: FineTuningRun) -> list[Participant]:
    """Every participant of the run with its job's status and lease holder and its site's name
    (``job_status``, ``job_lease_holder``, ``site_name``), read once per request (one query): the
    set never changes after approval, and a job that ends mid-request ends the run anyway. Each
    post used to count, list and join them four to six times."""
    cached = getattr(run, "_participants_read", None)
    if cached is None:
        cached = run._participants_read = list(Participant.objects.raw(_PARTICIPANTS_SQL, [run.id]))
    return cached


def n_participants(run: FineTuningRun) -> int:
    return len(participants_of(run))


def secagg_round_id(run: FineTuningRun) -> str:
    """Binds keys, ciphertexts and masks to one attempt of one round of one run."""
    return f"vaultbench-run-{run.id}-round-{run.current_round}-attempt-{run.attempt}"


def _next_round_id(run: FineTuningRun) -> str | None:
    if not run.secure_aggregation or run.current_round + 1 >= run.rounds:
        return None
    return f"vaultbench-run-{run.id}-round-{run.current_round + 1}-attempt-0"


def quantization_q(run: FineTuningRun, n: int) -> float:
    noise_std = distributed_noise_std(site_noise_multiplier(run), float(run.clip_norm), n)
    return quantization_range(float(run.clip_norm), noise_std)


def _vector_length(run: FineTuningRun) -> int:
    return layout_of(run.layout).size


def example_cap(run: FineTuningRun) -> int | None:
    """With example weighting: the largest site's training rows (from round 0). A site releases
    ``(n_k / cap) * update_k`` (still within the clip norm) and the hub divides the sum by
    ``sum(n_k) / cap``: FedAvg weighted by examples, also under secure aggregation."""
    return int(run.example_cap) if run.example_weighting and run.example_cap else None


def proximal_mu(run: FineTuningRun) -> float:
    """FedProx's mu as the hub sends it: the run's value, else the strategy's own default."""
    if run.strategy != StrategyName.FEDPROX:
        return 0.0
    return float(run.strategy_params.get("proximal_mu", FEDPROX_DEFAULT_MU))


def dp_settings(run: FineTuningRun) -> dict[str, Any] | None:
    """Record-level DP-SGD settings every site trains with (``runner.dpsgd``), or None."""
    if not is_record_level(run) or not run.noise_multiplier:
        return None
    return {
        "example_clip_norm": float(run.example_clip_norm or 1.0),
        "noise_multiplier": float(run.noise_multiplier),
        "sample_rate": float(run.dp_sample_rate or 1.0),
        "steps": int(run.dp_steps_per_round or 1),
        "distributed": bool(run.dp_distributed),  # sites add sigma/sqrt(t); refused where it does not hold
        "accountant": privacy_ledger(run).accountant,  # one epsilon also for runs approved before GDP
    }


def site_noise_multiplier(run: FineTuningRun) -> float:
    """The site-level noise added to the whole update (0 under record-level DP or no DP)."""
    return float(run.noise_multiplier or 0.0) if run.privacy_unit in ("", PrivacyUnit.SITE) else 0.0


def round_config(run: FineTuningRun) -> dict[str, Any]:
    """What every site needs for the current attempt of the current round (same for all)."""
    n = n_participants(run)
    z, clip = site_noise_multiplier(run), float(run.clip_norm or 1.0)
    epsilon_after = None
    if has_noise(run):
        epsilon_after = privacy_ledger(run).epsilon_if(noise_multiplier=round_step_noise(run, n))
        if not math.isfinite(epsilon_after):
            epsilon_after = None  # a vanishing sigma: no finite guarantee, and JSON has no inf
    return {
        "round": run.current_round,
        "attempt": run.attempt,
        "secagg_round_id": secagg_round_id(run) if run.secure_aggregation else None,
        "threshold": run.threshold,
        "n_participants": n,
        "vector_length": _vector_length(run) if run.layout else None,
        "privacy_unit": run.privacy_unit or PrivacyUnit.SITE,
        "dp": dp_settings(run),
        "clip_norm": clip,
        "noise_multiplier": z,
        "noise_std": distributed_noise_std(z, clip, n),
        "quantization_bits": run.quantization_bits,
        "quantization_range": quantization_q(run, n) if run.secure_aggregation else None,
        "learning_rate": run.learning_rate,
        "local_epochs": run.local_epochs,
        "batch_size": run.batch_size,
        "strategy": run.strategy,
        "proximal_mu": proximal_mu(run),
        "epsilon_after_round": epsilon_after,
        "example_cap": example_cap(run),
        # Fresh keys for the next round may be advertised during this one (used once, like any).
        "next_secagg_round_id": _next_round_id(run),
    }


def _numbers(run: FineTuningRun) -> dict[int, int]:
    """Participant id -> number."""
    return {p.id: p.number for p in participants_of(run)}


def _messages(run: FineTuningRun, kind: str, *, round_number: int | None = None, attempt: int | None = None,
              ) -> dict[int, ProtocolMessage]:  # fmt: skip
    """This phase's messages (or another round's) by participant number, with their payloads."""
    round_number = run.current_round if round_number is None else round_number
    attempt = run.attempt if attempt is None else attempt
    numbers = _numbers(run)
    rows = ProtocolMessage.objects.filter(run=run, round=round_number, attempt=attempt, kind=kind)
    return {numbers[m.participant_id]: m for m in rows}


def _posted(run: FineTuningRun, kind: str) -> dict[int, str]:
    """Who posted in this phase, and the hash of what: number -> body_sha256 (no payloads)."""
    numbers = _numbers(run)
    with connection.cursor() as cursor:
        cursor.execute(_POSTED_SQL, [run.id, run.current_round, run.attempt, kind])
        return {numbers[pid]: sha for pid, sha in cursor.fetchall()}


def _active_numbers(run: FineTuningRun) -> set[int]:
    """Participants whose train job is still alive (a site that gave up is not waited on)."""
    return {p.number for p in participants_of(run) if p.job_status not in TERMINAL_STATUSES}


def _expected(run: FineTuningRun) -> set[int]:
    active = _active_numbers(run)
    data = run.phase_data
    if run.phase == Phase.SHARES:
        return set(data.get("roster", [])) & active
    if run.phase == Phase.MASKED:
        return set(data.get("sharers", [])) & active
    if run.phase == Phase.UNMASK:
        return set(data.get("unmask_request", {}).get("survivors", [])) & active
    return active


def _first_phase(run: FineTuningRun) -> str:
    return Phase.KEYS if run.secure_aggregation else Phase.UPDATE


def _open_phase(run: FineTuningRun, phase: str, data: dict | None = None, *, new_round: bool = False) -> None:
    now = timezone.now()
    carried = {} if new_round else {"round_started_at": run.phase_data.get("round_started_at")}
    if new_round or not carried["round_started_at"]:
        carried["round_started_at"] = now.isoformat()
    run.phase, run.phase_started_at, run.phase_data = phase, now, {**carried, **(data or {})}
    transaction.on_commit(functools.partial(notify_changed, run.id))  # held state requests answer at once
    run._phase_unsaved = True  # saved once by _advance, however many phases this request opened


def _save_phase(run: FineTuningRun) -> None:
    if getattr(run, "_phase_unsaved", False):
        run.save(update_fields=["phase", "phase_started_at", "phase_data", "current_round", "attempt", "layout",
                                "example_cap",
                                "offset", "strategy_state", "privacy_ledger", "epsilon_spent", "rounds_completed",
                                "failed_rounds", "updated_at"])  # fmt: skip
        run._phase_unsaved = False


def _round_started_at(run: FineTuningRun) -> datetime:
    raw = run.phase_data.get("round_started_at")
    return datetime.fromisoformat(raw) if raw else (run.phase_started_at or timezone.now())


def _replace_file(field, name: str, data: bytes) -> None:
    """Stores a new file in ``field``; the old one is removed only once the new row is committed."""
    old_name, storage = field.name, field.storage
    field.save(name, ContentFile(data), save=False)
    if old_name:
        transaction.on_commit(lambda: storage.delete(old_name))


# --------------------------------------------------------------------------- access for sites


def _read_run(run_id: int, *, lock: bool = False) -> FineTuningRun | None:
    """The run row; ``lock``: ``SELECT ... FOR UPDATE`` where the database has it (PostgreSQL;
    SQLite's IMMEDIATE transactions already hold the write lock), inside the caller's transaction."""
    if lock and not connection.in_atomic_block:
        raise transaction.TransactionManagementError("A locked run read needs a transaction.")
    if not 0 < int(run_id) < 2**63:  # no such row; past 64 bits SQLite would overflow, not answer
        return None
    sql = _RUN_SQL + (" FOR UPDATE" if lock and connection.features.has_select_for_update else "")
    return next(iter(FineTuningRun.objects.raw(sql, [int(run_id)])), None)


def run_for_site(*, site: Site, run_id: int, lock: bool = False) -> tuple[FineTuningRun, Participant]:
    """The run and this site's participation; a site that does not take part gets 404."""
    run = _read_run(run_id, lock=lock)
    participant = None
    if run is not None:
        participant = next((p for p in participants_of(run) if p.site_id == site.id), None)
    if run is None or participant is None:
        raise NotFound("Run not found.")
    return run, participant


def run_state_for_site(*, site: Site, run_id: int, _retried: bool = False) -> dict[str, Any]:
    """What the site must do now: the phase, the round's config, and the messages addressed to it."""
    run, participant = run_for_site(site=site, run_id=run_id)
    try:
        return state_of(run, participant)
    except FileNotFoundError:
        if _retried:
            raise
        # The round closed since this row was read and its old D was removed on commit: the
        # state read above is stale; read it again (once).
        return run_state_for_site(site=site, run_id=run_id, _retried=True)


def run_state_after_post(*, site: Site, posted: Posted) -> dict[str, Any]:
    """The state a post answers with, from the run as the post left it (no second read of the
    run and its participants). A newer state reaches the site by its next long poll."""
    try:
        return state_of(posted.run, posted.participant, done=posted.done)
    except FileNotFoundError:  # another request closed the round since: read it afresh
        return run_state_for_site(site=site, run_id=posted.run.id)


def run_state_after_change(*, site: Site, posted: Posted) -> dict[str, Any]:
    """The state for a held post once its phase changed: the run row read again (one query), its
    participants as the post read them (fixed since approval; a job status a moment old only
    decides whether ``next_roster`` is offered, and shares sent for it are checked under the lock)."""
    run = _read_run(posted.run.id)
    if run is None:
        raise NotFound("Run not found.")
    run._participants_read = participants_of(posted.run)
    try:
        return state_of(run, posted.participant, done=_done_since(run, posted.where))
    except FileNotFoundError:  # another round closed since this read
        return run_state_for_site(site=site, run_id=run.id)


def state_of(run: FineTuningRun, participant: Participant, *, done: bool | None = None) -> dict[str, Any]:
    """The state of ``run`` for ``participant``; ``done`` when the caller knows it (else a query).
    Raises FileNotFoundError when ``D_r``'s file is gone (``run`` was read before a round closed)."""
    number = participant.number
    running = run.status == RunStatus.RUNNING
    state: dict[str, Any] = {
        "version": run_version(status=run.status, current_round=run.current_round, attempt=run.attempt,
                               phase=run.phase),  # fmt: skip
        "status": run.status,
        "round": run.current_round,
        "attempt": run.attempt,
        "phase": run.phase or None,
        "participant": number,
        "done": False,
        "round_config": round_config(run) if running else None,
        "layout": run.layout,
        "roster": [],
        "bundles": [],
        "unmask_request": None,
    }
    if not running:
        return state
    if done is None:
        done = ProtocolMessage.objects.filter(
            run=run, round=run.current_round, attempt=run.attempt, kind=run.phase, participant_id=participant.id
        ).exists()
    state["done"] = done
    inline_phases = (Phase.KEYS, Phase.SHARES, Phase.MASKED, Phase.UPDATE)  # a round may open at masked
    if run.phase in inline_phases and run.offset:
        offset = _inline_offset(run)
        if offset is not None:  # saves each site one request per round
            state["offset"] = {"round": run.current_round, "safetensors": offset}
    if run.phase == Phase.SHARES:
        state["roster"] = [
            {"participant": n, **{k: m.payload[k] for k in ("mask_public", "enc_public")}}
            for n, m in sorted(_messages(run, MessageKind.KEYS).items())
        ]
    elif run.phase == Phase.MASKED and number in run.phase_data.get("sharers", []):
        state["bundles"] = [
            {"sender": sender, **bundle}
            for sender, m in sorted(_messages(run, MessageKind.SHARES).items())
            for bundle in m.payload["bundles"]
            if bundle["recipient"] == number
        ]
    elif run.phase == Phase.UNMASK:
        request = run.phase_data.get("unmask_request", {})
        if number in request.get("survivors", []):
            state["unmask_request"] = request
            next_roster = _next_roster(run)
            if next_roster and any(entry["participant"] == number for entry in next_roster):
                state["next_roster"] = next_roster  # the unmask post may carry round r+1's shares
    return state


def _inline_offset(run: FineTuningRun) -> str | None:
    """``D_r`` as base64 when it is small enough to travel inside the state."""
    with run.offset.open("rb") as stored:
        data = stored.read(INLINE_OFFSET_BYTES + 1)
    return _b64s(data) if len(data) <= INLINE_OFFSET_BYTES else None


def run_offset_for_site(*, site: Site, run_id: int, round_number: int) -> FineTuningRun:
    """``D_r`` for the round in progress (only that one: older offsets are gone)."""
    run, _ = run_for_site(site=site, run_id=run_id)
    if run.status != RunStatus.RUNNING or not run.offset or run.current_round != round_number:
        raise NotFound("No offset for this round.")
    return run


# --------------------------------------------------------------------------- posts


def _check_lease(participant: Participant, agent_id: str) -> None:
    if participant.job_status != JobStatus.RUNNING or participant.job_lease_holder != agent_id:
        raise LeaseLost("This agent does not hold the lease of the site's train job.")


def _begin_post(
    *, site: Site, run_id: int, agent_id: str, kind: str, round_number: int | None,
    read: tuple[FineTuningRun, Participant] | None = None,
) -> tuple[FineTuningRun, Participant]:  # fmt: skip
    """The locked run and this site's participation, checked for the post (``read``: already locked)."""
    run, participant = read or run_for_site(site=site, run_id=run_id, lock=True)
    _check_lease(participant, agent_id)
    if run.status != RunStatus.RUNNING:
        raise Conflict("The run is not running.", code="run_not_running")
    if run.phase != kind or (round_number is not None and round_number != run.current_round):
        raise Conflict(
            f"The run is in round {run.current_round}, phase {run.phase}.",
            code="wrong_phase",
            details={"round": run.current_round, "phase": run.phase},
        )
    return run, participant


@dataclass
class Posted:
    """What a post did, and the run as it left it (its answer's state is built from these)."""

    created: bool
    run: FineTuningRun
    participant: Participant
    where: tuple[int, int, str] | None = None  # (round, attempt, phase) it was made in; None: ahead

    @property
    def done(self) -> bool | None:
        return _done_since(self.run, self.where)


def _done_since(run: FineTuningRun, where: tuple[int, int, str] | None) -> bool | None:
    """Whether a site that posted in ``where`` has posted in the run's current phase, when that
    follows without a query (None: ask the database)."""
    if where is None:
        return None
    if run.status != RunStatus.RUNNING or (run.current_round, run.attempt, run.phase) == where:
        return True
    # The phase changed since. Only keys and shares can be posted before their phase opens (sent
    # ahead with the last round's posts); in any other phase this site (busy with this post) has
    # not posted yet.
    return False if run.phase not in (Phase.KEYS, Phase.SHARES) else None


def _outcome(created: bool, run: FineTuningRun, participant: Participant, where: tuple[int, int, str]) -> Posted:
    return Posted(created, run, participant, where)


def _existing(participant: Participant, body_sha256: str, posted: dict[int, str]) -> bool:
    """True for an exact repeat of this site's post in this phase; a different one is refused.
    ``posted``: this phase's posts (``_posted``), read under the run's lock."""
    previous = posted.get(participant.number)
    if previous is None:
        return False
    if previous == body_sha256:
        return True
    raise Conflict("This site already posted a different message in this phase.", code="already_posted")


def _require_expected(run: FineTuningRun, participant: Participant) -> None:
    if participant.number not in _expected(run):
        raise Conflict("This site is not part of this phase of the round.", code="not_in_round")


def _payload_sha(payload: dict) -> str:
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def _store(
    run: FineTuningRun, participant: Participant, kind: str, payload: dict, body_sha256: str,
    vector: bytes | None = None, posted: dict[int, str] | None = None,
) -> None:  # fmt: skip
    ProtocolMessage.objects.create(
        run=run, round=run.current_round, attempt=run.attempt, participant=participant, kind=kind,
        payload=payload, vector=vector, body_sha256=body_sha256,
    )  # fmt: skip
    if posted is not None:
        posted[participant.number] = body_sha256


def _audit_post(run: FineTuningRun, participant: Participant, kind: str, **carried: bool) -> None:
    """One audit row per post; what else it carried (the next round's keys or shares) is named in it."""
    data = {"round": run.current_round, "attempt": run.attempt, "participant": participant.number}
    audit_record(action=f"finetuning.{kind}_posted", obj=run, actor_site_id=participant.site_id,
                 data={**data, **{name: True for name, value in carried.items() if value}})  # fmt: skip


@transaction.atomic
def run_post_layout(
    *, site: Site, run_id: int, agent_id: str, layout: Any, n_examples: int | None = None
) -> Posted:
    """Round 0: the parameter layout of the parent, as the site's sandbox found it, and the
    number of rows it trains on (released in the clear every round anyway: ``n_examples``)."""
    run, participant = _begin_post(
        site=site, run_id=run_id, agent_id=agent_id, kind=Phase.LAYOUT, round_number=None
    )
    where = (run.current_round, run.attempt, run.phase)
    cleaned = layout_clean(layout, max_parameters=settings.VAULTBENCH_FL_MAX_PARAMETERS)
    payload: dict[str, Any] = {"layout": cleaned}
    layout_sha = _payload_sha(payload)
    if n_examples is not None:
        payload["n_examples"] = _example_count(n_examples)
    sha = _payload_sha(payload)
    posted = _posted(run, MessageKind.LAYOUT)
    if _existing(participant, sha, posted):
        return _outcome(False, run, participant, where)
    _require_expected(run, participant)
    others = {_payload_sha({"layout": m.payload["layout"]}) for m in _messages(run, MessageKind.LAYOUT).values()}
    if others and layout_sha not in others:
        raise Conflict("This layout differs from the one other sites reported.", code="layout_mismatch")
    _store(run, participant, MessageKind.LAYOUT, payload, sha, posted=posted)
    _audit_post(run, participant, MessageKind.LAYOUT)
    _advance(run, timed_out=False, posted=set(posted))
    return _outcome(True, run, participant, where)


def _keys_payload(keys: Any) -> tuple[dict, bytes, bytes]:
    if not isinstance(keys, dict):
        raise DomainError("keys must be an object.", code="invalid_message")
    mask = _b64(keys.get("mask_public"), "keys.mask_public", length=_KEY_BYTES)
    enc = _b64(keys.get("enc_public"), "keys.enc_public", length=_KEY_BYTES)
    return {"mask_public": _b64s(mask), "enc_public": _b64s(enc)}, mask, enc


def _post_next_round_keys(run: FineTuningRun, participant: Participant, keys: Any, *, audit: bool = True) -> bool:
    """Keys for round r+1 (attempt 0), advertised while round r is in its masked or unmask phase.
    They are fresh keys used in that one round only, exactly as if posted in its keys phase: the
    hub learns the public keys a little earlier, nothing else. When round r+1 opens and every
    expected site has advertised, its keys phase closes at once. ``audit``: False when the
    carrying post's own audit row names them."""
    payload, mask, enc = _keys_payload(keys)
    sha = _payload_sha(payload)
    rows = _messages(run, MessageKind.KEYS, round_number=run.current_round + 1, attempt=0)
    mine = rows.get(participant.number)
    if mine is not None:
        if mine.body_sha256 == sha:
            return False
        raise Conflict("This site already advertised different keys for the next round.", code="already_posted")
    taken = {m.payload[k] for m in rows.values() for k in ("mask_public", "enc_public")}
    if mask == enc or payload["mask_public"] in taken or payload["enc_public"] in taken:
        raise Conflict("Public keys must be fresh and distinct.", code="invalid_keys")
    ProtocolMessage.objects.create(run=run, round=run.current_round + 1, attempt=0, participant=participant,
                                   kind=MessageKind.KEYS, payload=payload, body_sha256=sha)  # fmt: skip
    if audit:
        audit_record(action="finetuning.keys_posted", obj=run, actor_site_id=participant.site_id,
                     data={"round": run.current_round + 1, "attempt": 0, "participant": participant.number,
                           "ahead": True})  # fmt: skip
    return True


def _next_roster(run: FineTuningRun, keys: dict[int, ProtocolMessage] | None = None) -> list[dict] | None:
    """Round r+1's roster, once every active site advertised its keys for it (with its masked
    post): the keys phase of r+1 will close at once with exactly these keys, so its shares can
    be made now (docs/federated-protocol.md, "Two phases per round"). ``keys``: round r+1's
    keys messages when the caller has read them."""
    if not run.secure_aggregation or _next_round_id(run) is None:
        return None
    rows = _messages(run, MessageKind.KEYS, round_number=run.current_round + 1, attempt=0) if keys is None else keys
    if len(rows) < max(min_contributors(run), 3) or not _active_numbers(run) <= set(rows):
        return None
    return [
        {"participant": n, **{k: m.payload[k] for k in ("mask_public", "enc_public")}} for n, m in sorted(rows.items())
    ]


def _clean_bundles(bundles: Any, sender: int, roster: list[int]) -> dict:
    if not isinstance(bundles, list) or not all(isinstance(b, dict) for b in bundles):
        raise DomainError("bundles must be a list of objects.", code="invalid_message")
    cleaned = []
    for bundle in bundles:
        if bundle.get("sender", sender) != sender:
            raise DomainError("A site sends only its own share bundles.", code="invalid_message")
        recipient = bundle.get("recipient")
        if isinstance(recipient, bool) or not isinstance(recipient, int):
            raise DomainError("Each bundle names its recipient.", code="invalid_message")
        nonce = _b64(bundle.get("nonce"), "nonce", length=_NONCE_BYTES)
        ciphertext = _b64(bundle.get("ciphertext"), "ciphertext", length=_BUNDLE_BYTES)
        cleaned.append({"recipient": recipient, "nonce": _b64s(nonce), "ciphertext": _b64s(ciphertext)})
    cleaned.sort(key=lambda b: b["recipient"])
    if [b["recipient"] for b in cleaned] != sorted(roster):
        raise DomainError("Send exactly one bundle to every site of the roster.", code="invalid_message")
    return {"bundles": cleaned}


def _post_next_round_shares(run: FineTuningRun, participant: Participant, bundles: Any) -> bool:
    """Round r+1's encrypted shares, carried by this site's unmask post of round r. Accepted only
    against the complete next roster (every active site advertised): they are exactly the shares
    r+1's shares phase would collect, encrypted under r+1's fresh keys and bound to its round id.
    True when stored now (the unmask post's audit row names them)."""
    ahead = ProtocolMessage.objects.filter(run=run, round=run.current_round + 1, attempt=0,
                                           kind__in=(MessageKind.KEYS, MessageKind.SHARES))  # fmt: skip
    numbers = _numbers(run)
    keys = {numbers[m.participant_id]: m for m in ahead if m.kind == MessageKind.KEYS}
    previous = next((m for m in ahead if m.kind == MessageKind.SHARES and m.participant_id == participant.id), None)
    roster = _next_roster(run, keys)
    if roster is None or participant.number not in {e["participant"] for e in roster}:
        raise Conflict("The next round's roster is not complete.", code="wrong_phase")
    payload = _clean_bundles(bundles, participant.number, [e["participant"] for e in roster])
    sha = _payload_sha(payload)
    if previous is not None:
        if previous.body_sha256 != sha:
            raise Conflict("This site already sent different shares for the next round.", code="already_posted")
        return False
    ProtocolMessage.objects.create(run=run, round=run.current_round + 1, attempt=0, participant=participant,
                                   kind=MessageKind.SHARES, payload=payload, body_sha256=sha)  # fmt: skip
    return True


@transaction.atomic
def run_post_keys(*, site: Site, run_id: int, round_number: int, agent_id: str, keys: Any) -> Posted:
    run, participant = run_for_site(site=site, run_id=run_id, lock=True)
    if (
        run.status == RunStatus.RUNNING
        and run.secure_aggregation
        and round_number == run.current_round + 1 < run.rounds
        and run.phase in (Phase.MASKED, Phase.UNMASK)
    ):
        _check_lease(participant, agent_id)
        created = _post_next_round_keys(run, participant, keys)
        return Posted(created, run, participant)  # posted ahead: not in the current phase
    run, participant = _begin_post(site=site, run_id=run_id, agent_id=agent_id, kind=Phase.KEYS,
                                   round_number=round_number, read=(run, participant))  # fmt: skip
    where = (run.current_round, run.attempt, run.phase)
    payload, mask, enc = _keys_payload(keys)
    sha = _payload_sha(payload)
    posted = _posted(run, MessageKind.KEYS)
    if _existing(participant, sha, posted):
        return _outcome(False, run, participant, where)
    _require_expected(run, participant)
    taken = {
        m.payload[k] for m in _messages(run, MessageKind.KEYS).values() for k in ("mask_public", "enc_public")
    }
    if mask == enc or payload["mask_public"] in taken or payload["enc_public"] in taken:
        raise Conflict("Public keys must be fresh and distinct.", code="invalid_keys")
    _store(run, participant, MessageKind.KEYS, payload, sha, posted=posted)
    _audit_post(run, participant, MessageKind.KEYS)
    _advance(run, timed_out=False, posted=set(posted))
    return _outcome(True, run, participant, where)


@transaction.atomic
def run_post_shares(*, site: Site, run_id: int, round_number: int, agent_id: str, bundles: Any) -> Posted:
    run, participant = _begin_post(site=site, run_id=run_id, agent_id=agent_id, kind=Phase.SHARES,
                                   round_number=round_number)  # fmt: skip
    where = (run.current_round, run.attempt, run.phase)
    payload = _clean_bundles(bundles, participant.number, run.phase_data.get("roster", []))
    sha = _payload_sha(payload)
    posted = _posted(run, MessageKind.SHARES)
    if _existing(participant, sha, posted):
        return _outcome(False, run, participant, where)
    _require_expected(run, participant)
    _store(run, participant, MessageKind.SHARES, payload, sha, posted=posted)
    _audit_post(run, participant, MessageKind.SHARES)
    _advance(run, timed_out=False, posted=set(posted))
    return _outcome(True, run, participant, where)


def _example_count(value: Any) -> int:
    count = _finite(value, "n_examples", low=1)
    if count is None or count != int(count) or count > MAX_SITE_TRAIN_ROWS:
        raise DomainError(f"n_examples must be an integer in 1..{MAX_SITE_TRAIN_ROWS:,}.", code="invalid_message")
    return int(count)


def _round_metrics(values: dict) -> dict:
    validation = values.get("validation") or {}
    if not isinstance(validation, dict) or len(validation) > _MAX_VALIDATION_METRICS:
        raise DomainError("validation must be an object of at most 16 metrics.", code="invalid_message")
    return {
        "train_loss": _finite(values.get("train_loss"), "train_loss", allow_null=True),
        "n_examples": int(_finite(values.get("n_examples"), "n_examples", low=1)),
        "validation": {str(k)[:64]: _finite(v, f"validation.{k}") for k, v in validation.items()},
        "n_validation": int(_finite(values.get("n_validation", 0), "n_validation", low=0)),
        "epsilon": _finite(values.get("epsilon"), "epsilon", low=0, allow_null=True),
    }


def _post_release(
    *, site: Site, run_id: int, round_number: int, agent_id: str, kind: str, vector: Any, values: dict,
    released: dict, ledger_sha256: str, ledger_bytes: int,
) -> Posted:  # fmt: skip
    """A masked vector or a plain update: a release the site logged; the hub mirrors it."""
    run, participant = _begin_post(
        site=site, run_id=run_id, agent_id=agent_id, kind=kind, round_number=round_number
    )
    where = (run.current_round, run.attempt, run.phase)
    posted = _posted(run, kind)
    if _existing(participant, ledger_sha256, posted):
        return _outcome(False, run, participant, where)
    _require_expected(run, participant)
    length = _vector_length(run)
    data = _b64(vector, "vector", length=4 * length)
    if kind == MessageKind.UPDATE:
        update = np.frombuffer(data, dtype="<f4").astype(np.float64)
        if not np.all(np.isfinite(update)):
            raise DomainError("The update has non-finite values.", code="invalid_message")
        norm, bound = float(np.linalg.norm(update)), update_norm_bound(run, n_participants(run))
        if norm > bound:
            raise DomainError(
                f"The update's norm {norm:.6g} is above the run's bound {bound:.6g} (clip norm plus noise).",
                code="update_out_of_bounds", details={"norm": norm, "bound": bound},
            )  # fmt: skip
    metrics = _round_metrics(values)
    bound = example_cap(run) or MAX_SITE_TRAIN_ROWS
    if metrics["n_examples"] > bound:
        raise DomainError(
            f"n_examples {metrics['n_examples']} is above {bound:,} rows (the largest train split of round 0).",
            code="invalid_message",
        )
    next_keys = values.get("next_keys")
    if next_keys is not None and (kind != MessageKind.MASKED or _next_round_id(run) is None):
        raise DomainError("next_keys only travel with a masked post before the last round.", code="invalid_message")
    egress_receipt_verify(body=released, sha256=ledger_sha256, size=ledger_bytes)
    # The run's task and vendor are its parent's, which is the train job's submission.
    egress_record_create(job_id=participant.job_id, kind=EgressKind.UPDATE, sha256=ledger_sha256, size=ledger_bytes,
                         epsilon=metrics["epsilon"], delta=run.dp_delta, site_id=participant.site_id,
                         task_id=run.task_id, vendor_id=run.vendor_id)  # fmt: skip
    _store(run, participant, kind, metrics, ledger_sha256, vector=data, posted=posted)
    ahead = False
    if next_keys is not None:  # round r+1's fresh keys, in the same request (see _post_next_round_keys)
        ahead = _post_next_round_keys(run, participant, next_keys, audit=False)
    _audit_post(run, participant, kind, next_keys=ahead)
    _advance(run, timed_out=False, posted=set(posted))
    return _outcome(True, run, participant, where)


@transaction.atomic
def run_post_masked(**kwargs) -> Posted:
    return _post_release(kind=MessageKind.MASKED, **kwargs)


@transaction.atomic
def run_post_update(**kwargs) -> Posted:
    return _post_release(kind=MessageKind.UPDATE, **kwargs)


def _shares(raw: Any, expected: set[int], field: str) -> dict[int, int]:
    if not isinstance(raw, dict):
        raise DomainError(f"{field} must be an object.", code="invalid_message")
    out: dict[int, int] = {}
    for key, value in raw.items():
        try:
            site_id, share = int(key), int(value)
        except (TypeError, ValueError):
            raise DomainError(
                f"{field} maps site numbers to decimal integers.", code="invalid_message"
            ) from None
        if isinstance(value, bool) or not 0 <= share < PRIME:
            raise DomainError(f"{field} has a share out of range.", code="invalid_message")
        out[site_id] = share
    if set(out) != expected:
        raise DomainError(
            f"{field} must answer exactly the sites of the unmask request.", code="invalid_message"
        )
    return out


@transaction.atomic
def run_post_unmask(
    *, site: Site, run_id: int, round_number: int, agent_id: str, response: Any, next_shares: Any = None
) -> Posted:
    run, participant = _begin_post(site=site, run_id=run_id, agent_id=agent_id, kind=Phase.UNMASK,
                                   round_number=round_number)  # fmt: skip
    where = (run.current_round, run.attempt, run.phase)
    request = run.phase_data["unmask_request"]
    if not isinstance(response, dict):
        raise DomainError("response must be an object.", code="invalid_message")
    self_shares = _shares(response.get("self_mask_shares"), set(request["survivors"]), "self_mask_shares")
    key_shares = _shares(response.get("mask_key_shares", {}), set(request["dropped"]), "mask_key_shares")
    payload = {
        "self_mask_shares": {str(k): str(v) for k, v in sorted(self_shares.items())},
        "mask_key_shares": {str(k): str(v) for k, v in sorted(key_shares.items())},
    }
    sha = _payload_sha(payload)
    posted = _posted(run, MessageKind.UNMASK)
    if _existing(participant, sha, posted):
        return _outcome(False, run, participant, where)
    _require_expected(run, participant)
    _store(run, participant, MessageKind.UNMASK, payload, sha, posted=posted)
    ahead = False
    if next_shares is not None:  # before _advance: the next round may open (and close its shares) now
        try:
            ahead = _post_next_round_shares(run, participant, next_shares)  # refuses before it writes
        except DomainError as exc:  # the unmask answer stands; the next round's shares phase remains
            audit_record(action="finetuning.next_shares_refused", obj=run, actor_site_id=participant.site_id,
                         data={"round": run.current_round + 1, "participant": participant.number, "code": exc.code})  # fmt: skip
    _audit_post(run, participant, MessageKind.UNMASK, next_shares=ahead)
    _advance(run, timed_out=False, posted=set(posted))
    return _outcome(True, run, participant, where)


# --------------------------------------------------------------------------- advancement


def _advance(run: FineTuningRun, *, timed_out: bool, posted: set[int] | None = None) -> None:
    """Closes the current phase of a locked run if every expected site posted, or if it timed out
    (``posted``: who posted in it, when the caller read that under the lock). Whatever phases
    open here are written in one save."""
    _advance_phase(run, timed_out=timed_out, posted=posted)
    _save_phase(run)


def _advance_phase(run: FineTuningRun, *, timed_out: bool, posted: set[int] | None = None) -> None:
    if run.status != RunStatus.RUNNING:
        return
    if posted is None:
        posted = set(_posted(run, run.phase))
    if not timed_out and not _expected(run) <= posted:
        return
    {
        Phase.LAYOUT: _close_layout,
        Phase.KEYS: _close_keys,
        Phase.SHARES: _close_shares,
        Phase.MASKED: _close_masked,
        Phase.UNMASK: _close_unmask,
        Phase.UPDATE: _close_update,
    }[Phase(run.phase)](run, posted)


def _close_layout(run: FineTuningRun, posted: set[int]) -> None:
    messages = _messages(run, MessageKind.LAYOUT)
    if len(messages) < max(min_contributors(run), 3 if run.secure_aggregation else 1):
        return _fail_round(run, "too_few_sites")
    run.layout = next(iter(messages.values())).payload["layout"]
    counts = [m.payload.get("n_examples") for m in messages.values()]
    run.example_cap = max(counts) if counts and all(isinstance(c, int) for c in counts) else None
    layout = layout_of(run.layout)
    _replace_file(run.offset, "offset.safetensors", offset_to_bytes(np.zeros(layout.size), layout))
    ProtocolMessage.objects.filter(run=run, kind=MessageKind.LAYOUT).delete()
    audit_record(
        action="finetuning.layout_fixed", obj=run, data={"parameters": layout.size, "sites": sorted(posted)}
    )
    _open_phase(run, _first_phase(run))


def _close_keys(run: FineTuningRun, posted: set[int]) -> None:
    if len(posted) < max(min_contributors(run), 3):
        return _fail_round(run, "too_few_sites")
    _open_phase(run, Phase.SHARES, {"roster": sorted(posted)})


def _close_shares(run: FineTuningRun, posted: set[int]) -> None:
    if len(posted) < min_contributors(run):
        return _fail_round(run, "too_few_sites")
    _open_phase(run, Phase.MASKED, {"roster": run.phase_data["roster"], "sharers": sorted(posted)})


def _close_masked(run: FineTuningRun, posted: set[int]) -> None:
    if len(posted) < min_contributors(run):
        return _fail_round(run, "too_few_sites")
    sharers = set(run.phase_data["sharers"])
    request = {"survivors": sorted(posted), "dropped": sorted(sharers - posted)}
    _open_phase(run, Phase.UNMASK, {**run.phase_data, "unmask_request": request})


def _close_unmask(run: FineTuningRun, posted: set[int]) -> None:
    if len(posted) < int(run.threshold or 0):
        return _fail_round(run, "too_few_unmask_answers")
    n = n_participants(run)
    numbers = _numbers(run)
    by_kind: dict[str, dict[int, ProtocolMessage]] = {
        MessageKind.KEYS: {}, MessageKind.MASKED: {}, MessageKind.UNMASK: {}
    }  # fmt: skip
    rows = ProtocolMessage.objects.filter(run=run, round=run.current_round, attempt=run.attempt,
                                          kind__in=list(by_kind))  # fmt: skip
    for m in rows:  # the round's three kinds in one read
        by_kind[m.kind][numbers[m.participant_id]] = m
    keys = by_kind[MessageKind.KEYS]
    roster = [
        AdvertisedKeys(
            num, base64.b64decode(m.payload["mask_public"]), base64.b64decode(m.payload["enc_public"])
        )
        for num, m in sorted(keys.items())
    ]
    masked_rows = by_kind[MessageKind.MASKED]
    masked = {
        num: np.frombuffer(bytes(m.vector), dtype="<u4").astype(np.uint32) for num, m in masked_rows.items()
    }
    request = run.phase_data["unmask_request"]
    responses = [
        UnmaskResponse(
            sender=num,
            self_mask_shares={int(k): int(v) for k, v in m.payload["self_mask_shares"].items()},
            mask_key_shares={int(k): int(v) for k, v in m.payload["mask_key_shares"].items()},
        )
        for num, m in by_kind[MessageKind.UNMASK].items()
    ]
    params = RoundParams(
        round_id=secagg_round_id(run), threshold=int(run.threshold), vector_length=_vector_length(run)
    )
    try:
        total = server_unmask(params, roster, masked, request["dropped"], responses)
    except SecAggError:
        return _fail_round(run, "unmask_failed")
    k = len(masked)
    summed = dequantize(total, clip_norm=quantization_q(run, n), bits=int(run.quantization_bits), n_summed=k)
    del masked, total  # only the dequantized sum is used from here on
    # Each site quantized its clipped update with an error of at most one step per coordinate.
    step = 2 * quantization_q(run, n) / (2 ** int(run.quantization_bits) - 1)
    bound = update_norm_bound(run, n, k) + k * step * math.sqrt(summed.size)
    if not np.all(np.isfinite(summed)) or float(np.linalg.norm(summed)) > bound:
        audit_record(action="finetuning.sum_out_of_bounds", obj=run,
                     data={"round": run.current_round, "norm": float(np.linalg.norm(summed)), "bound": bound})  # fmt: skip
        return _fail_round(run, "sum_out_of_bounds")
    cap = example_cap(run)
    if cap:  # the sum is of (n_k / cap) * update_k: divide by sum(n_k / cap), n_k as each site released it
        weight = sum(int(m.payload["n_examples"]) for m in masked_rows.values()) / cap
        mean = summed / weight
    else:
        mean = mean_update(summed, k)
    _apply_round(run, mean, masked_rows, n)


def _close_update(run: FineTuningRun, posted: set[int]) -> None:
    rows = _messages(run, MessageKind.UPDATE)
    if len(rows) < min_contributors(run):
        return _fail_round(run, "too_few_sites")
    n = n_participants(run)
    ordered = [m for _, m in sorted(rows.items())]
    stack = np.stack([np.frombuffer(bytes(m.vector), dtype="<f4").astype(np.float64) for m in ordered])
    weights = np.array([float(m.payload["n_examples"]) for m in ordered]) if example_cap(run) else None
    _apply_round(run, _robust_mean(run, stack, n, weights), rows, n)


def _robust_mean(run: FineTuningRun, stack: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """The plain mean is weighted by examples when the run says so; the robust rules are not
    (a median or a trimmed mean of weighted updates would let one big site dominate)."""
    rule, k = run.robust_rule or "mean", stack.shape[0]
    if rule == "median":
        return robust.coordinate_median(stack)
    if rule == "trimmed_mean":
        return robust.trimmed_mean(stack, beta=1.0 / k) if k >= 3 else robust.coordinate_median(stack)
    if rule == "norm_bound":
        # An honest update is clipped to C, then noised with std sigma per coordinate: its norm is
        # at most C + ||noise||, and ||noise|| < sigma (sqrt(d) + 4) but with negligible probability.
        sigma = distributed_noise_std(site_noise_multiplier(run), float(run.clip_norm), n)
        bound = (float(run.clip_norm) + sigma * (math.sqrt(stack.shape[1]) + 4.0)) * (1 + 1e-5)
        return robust.mean(robust.norm_bound(stack, bound))
    if weights is not None:
        return weights @ stack / weights.sum()
    return robust.mean(stack)


def _strategy(run: FineTuningRun) -> Strategy:
    strategy = get_strategy(
        run.strategy, learning_rate=run.learning_rate, local_epochs=run.local_epochs, **run.strategy_params
    )
    if run.strategy_state:  # FedAdam's m and v, FedAvg's server momentum m
        with run.strategy_state.open("rb") as stored:
            strategy.load_state_dict(state_from_bytes(stored.read()))
    return strategy


def _weighted(rows: list[dict], value_key: str, weight_key: str) -> float | None:
    pairs = [
        (r[value_key], r[weight_key]) for r in rows if r.get(value_key) is not None and r[weight_key] > 0
    ]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def _weighted_validation(rows: list[dict]) -> dict[str, float]:
    names = set.intersection(*(set(r["validation"]) for r in rows)) if rows else set()
    out = {}
    for name in sorted(names):
        value = _weighted([{"v": r["validation"][name], "w": r["n_validation"]} for r in rows], "v", "w")
        if value is not None:
            out[name] = value
    return out


def _apply_round(run: FineTuningRun, mean: np.ndarray, rows: dict[int, ProtocolMessage], n: int) -> None:
    """``D_{r+1} = strategy(D_r, mean update)``; the round's curves; the privacy ledger; next round."""
    layout = layout_of(run.layout)
    with run.offset.open("rb") as stored:
        current = offset_from_bytes(stored.read(), layout)
    strategy = _strategy(run)
    new = strategy.aggregate(current, mean, len(rows))
    _replace_file(run.offset, "offset.safetensors", offset_to_bytes(new, layout))
    state = strategy.state_dict()
    if any(v is not None for v in state.values()):
        _replace_file(run.strategy_state, "strategy_state.safetensors", state_to_bytes(state))
    _spend(run, round_step_noise(run, n))  # the sites' own (worst-case) charge: one epsilon
    sites = {p.number: p.site_name for p in participants_of(run)}
    per_site = [{"participant": num, "site": sites[num], **m.payload} for num, m in sorted(rows.items())]
    RoundRecord.objects.create(
        run=run, round=run.current_round, attempt=run.attempt, status=RoundStatus.AGGREGATED,
        n_contributors=len(rows), train_loss=_weighted(per_site, "train_loss", "n_examples"),
        validation=_weighted_validation(per_site), per_site=per_site, epsilon=run.epsilon_spent,
        started_at=_round_started_at(run), finished_at=timezone.now(),
    )  # fmt: skip
    ProtocolMessage.objects.filter(run=run, round=run.current_round).delete()
    run.rounds_completed += 1
    audit_record(action="finetuning.round_aggregated", obj=run,
                 data={"round": run.current_round, "contributors": sorted(rows), "epsilon": run.epsilon_spent})  # fmt: skip
    _next_round(run, n)


def _spend(run: FineTuningRun, noise_multiplier: float) -> None:
    if not has_noise(run):
        return
    ledger = privacy_ledger(run)
    ledger.record_round(noise_multiplier=noise_multiplier)
    run.privacy_ledger = ledger.to_dict()
    run.epsilon_spent = ledger.epsilon


def _next_round(run: FineTuningRun, n: int) -> None:
    transaction.on_commit(functools.partial(notify_changed, run.id))  # also when the run ends here
    if run.current_round + 1 >= run.rounds:
        run.save()
        run_finish(run=run)
        return
    if not next_round_allowed(run, n):
        run.save()
        run_finish(run=run, reason="epsilon_cap")
        return
    run.current_round += 1
    run.attempt = 0
    _open_phase(run, _first_phase(run), new_round=True)
    if run.secure_aggregation:  # keys (and shares) sent ahead by every site: straight to shares or masked
        _advance_phase(run, timed_out=False)
        if run.phase == Phase.SHARES:
            _advance_phase(run, timed_out=False)


def _fail_round(run: FineTuningRun, reason: str) -> None:
    """Too few sites (or a failed unmask): D is unchanged; retry once, three failures end the run."""
    n = n_participants(run)
    if not run.secure_aggregation and run.phase == Phase.UPDATE and _messages(run, MessageKind.UPDATE):
        _spend(run, round_step_noise(run, n))  # individual updates reached the hub: that is spent
    RoundRecord.objects.create(
        run=run, round=run.current_round, attempt=run.attempt, status=RoundStatus.FAILED, failure_reason=reason,
        epsilon=run.epsilon_spent, started_at=_round_started_at(run), finished_at=timezone.now(),
    )  # fmt: skip
    ProtocolMessage.objects.filter(run=run, round=run.current_round, attempt=run.attempt).delete()
    run.failed_rounds += 1
    audit_record(action="finetuning.round_failed", obj=run,
                 data={"round": run.current_round, "attempt": run.attempt, "reason": reason})  # fmt: skip
    if run.attempt >= 1 or run.failed_rounds >= MAX_FAILED_ROUNDS:
        run.save()
        run_end(run=run, status=RunStatus.FAILED, reason="too_many_failed_rounds")
        return
    if not next_round_allowed(run, n):
        run.save()
        if run.rounds_completed:
            run_finish(run=run, reason="epsilon_cap")
        else:
            run_end(run=run, status=RunStatus.FAILED, reason="epsilon_cap")
        return
    run.attempt += 1
    _open_phase(run, Phase.LAYOUT if run.layout is None else _first_phase(run), new_round=True)


def runs_advance_due(*, now: datetime | None = None) -> int:
    """Closes every phase whose timeout has passed. Safe to run twice or concurrently: each run is
    locked and moves only if its phase is still the one that timed out."""
    now = now or timezone.now()
    moved = 0
    due = FineTuningRun.objects.filter(status=RunStatus.RUNNING, phase_started_at__isnull=False).values_list(
        "id", "phase_started_at", "round_timeout_seconds"
    )
    for run_id, started, timeout in due:
        if started + timedelta(seconds=timeout) > now:
            continue
        with transaction.atomic():
            run = FineTuningRun.objects.select_for_update().get(id=run_id)
            if run.status != RunStatus.RUNNING or run.phase_started_at != started:
                continue
            _advance(run, timed_out=True)
            moved += 1
    return moved
