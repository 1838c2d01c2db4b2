"""The site participant of one federated fine-tuning run (docs/federated-protocol.md).

The agent claims a ``Job(kind=train)``, starts ONE training sandbox for the run and hands both
to ``SiteParticipant.run()``, which follows the hub's run state and does each phase once:

- ``layout`` (round 0): report the parent's parameter layout (from ``w0``, read in the sandbox).
- ``keys``: fetch ``D_r``, train ``local_epochs`` from ``w0 + D_r`` in the sandbox (which also
  predicts the validation rows with ``w0 + D_r``), then advertise fresh X25519 keys.
- ``shares``: Shamir shares for the roster; ``masked``: update = new - old -> clip -> this
  site's share of the noise -> quantize -> mask; ``unmask``: answer the unmask request.
- ``update`` (no secure aggregation): train as in ``keys``, post the clipped, noised update.

Every masked/update post is a release: its body (without ``ledger``) is appended to the site's
egress ledger as kind ``update`` with the epsilon spent so far, BEFORE the post, and the post
carries the receipt ``ledger: {sha256, bytes}``. Metrics that leave (validation accuracy and log
loss, the training loss) are computed here from the sandbox's predictions against labels the
site holds, rounded to ``METRIC_DECIMALS``; the sandbox's own loss claim never leaves.

Privacy accounting (per site, at the run's delta): with secure aggregation the hub only sees
the sum of at least ``threshold`` sites, each adding std ``z C / sqrt(m)``, so a round is charged
at the worst case ``z * sqrt(threshold / m)``; without it the hub sees this site's own noised
update, charged at ``z / sqrt(m)``. The count of rounds already spent comes from the ledger, so
an agent restart does not reset the budget. A round that would pass ``epsilon_cap`` is not posted.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from evaluator.federated import wire
from evaluator.federated.accounting import (
    PrivacyLedger,
    effective_noise_multiplier,
    record_level_ledger,
    steps_per_round,
)
from evaluator.federated.client_update import prepare_site_update
from evaluator.federated.secagg import RoundParams, SecAggClient
from evaluator.federated.updates import Layout, flatten, max_bits_for_sites
from evaluator.privacy.distributed import applies as distributed_applies
from evaluator.privacy.distributed import site_noise_share

log = logging.getLogger(__name__)

METRIC_DECIMALS = 4
EXIT_POLICY = 8  # evaluator.runner.train.EXIT_POLICY (the runner is not importable here in the image)
PHASES = ("layout", "keys", "shares", "masked", "unmask", "update")
_ORDER = {"keys": 0, "shares": 1, "masked": 2, "unmask": 3, "update": 0}
MAX_LOCAL_EPOCHS = 1000
MAX_BATCH_SIZE = 1 << 16
#: How long one state request may be held by the hub (short: ``should_stop`` is checked between).
LONG_POLL_SECONDS = 5.0


class SiteRunError(Exception):
    """The site stops taking part in the run; ``reason`` is the coarse reason for the hub."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Session(Protocol):
    """What the participant needs of a training sandbox (``evaluator.training_sandbox.TrainingSession``)."""

    def start(self) -> dict[str, np.ndarray]: ...

    def run_round(self, offset: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> Any: ...

    def close(self) -> None: ...


# --- the run spec -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    id: int | str
    participant: int
    n_participants: int
    rounds: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    proximal_mu: float
    secure_aggregation: bool
    threshold: int
    clip_norm: float
    noise_multiplier: float
    dp_delta: float
    epsilon_cap: float | None
    quantization_bits: int
    round_timeout_seconds: float
    strategy: str = "fedavg"
    privacy_unit: str = "site"  # record (DP-SGD in the sandbox), site (noise on the update), none
    dp: Mapping[str, Any] | None = None  # record: example_clip_norm, noise_multiplier, sample_rate, steps
    validation_holdout: bool = True  # False: every train row trains, no validation metrics
    example_weighting: bool = False  # FedAvg weighted by examples (the hub scales by round_config.example_cap)

    @property
    def accounted_noise_multiplier(self) -> float:
        """The noise multiplier this site's data is protected by, per round (worst case)."""
        if self.privacy_unit == "record":
            return float(self.dp["noise_multiplier"]) if self.dp else 0.0
        seen = self.threshold if self.secure_aggregation else 1
        return effective_noise_multiplier(self.noise_multiplier, self.n_participants, seen)

    def new_privacy_ledger(self, rounds_spent: int) -> PrivacyLedger:
        """The site's accountant, with ``rounds_spent`` rounds already released (from its ledger)."""
        if self.privacy_unit == "record" and self.dp:
            ledger = record_level_ledger(
                noise_multiplier=float(self.dp["noise_multiplier"]), sample_rate=float(self.dp["sample_rate"]),
                local_epochs=self.local_epochs, delta=self.dp_delta, accountant=self.dp.get("accountant"),
            )  # fmt: skip
        else:
            ledger = PrivacyLedger(delta=self.dp_delta, noise_multiplier=self.accounted_noise_multiplier)
        if rounds_spent:
            z, q = ledger.noise_multiplier, ledger.sample_rate
            ledger.history = [(z, q, rounds_spent * ledger.steps_per_round)]
        return ledger


def _number(run: Mapping[str, Any], key: str, *, kind: type = float, default: Any = None) -> Any:
    value = run.get(key)
    if value is None:  # absent or null: an optional setting takes its default
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SiteRunError("policy_violation", f"run.{key} must be a number")
    if not math.isfinite(value):
        raise SiteRunError("policy_violation", f"run.{key} must be finite")
    if kind is int:
        if int(value) != value:
            raise SiteRunError("policy_violation", f"run.{key} must be an integer")
        return int(value)
    return float(value)


def parse_run(run: Any) -> RunSpec:
    """Check the hub's run settings against the protocol's rules (the hub is not trusted)."""
    if not isinstance(run, Mapping) or "id" not in run:
        raise SiteRunError("policy_violation", "a train job must carry its run")

    def refuse(why: str) -> SiteRunError:
        return SiteRunError("policy_violation", why)

    n = _number(run, "n_participants", kind=int)
    participant = _number(run, "participant", kind=int)
    secure = run.get("secure_aggregation", False)
    if not isinstance(secure, bool):
        raise refuse("run.secure_aggregation must be a boolean")
    threshold = _number(run, "threshold", kind=int, default=n // 2 + 1)
    bits = _number(run, "quantization_bits", kind=int, default=20)
    cap = run.get("epsilon_cap")
    holdout, weighting = run.get("validation_holdout", True), run.get("example_weighting", False)
    if not isinstance(holdout, bool) or not isinstance(weighting, bool):
        raise refuse("run.validation_holdout and run.example_weighting must be booleans")
    spec = RunSpec(
        id=run["id"],
        participant=participant,
        n_participants=n,
        rounds=_number(run, "rounds", kind=int),
        local_epochs=_number(run, "local_epochs", kind=int, default=1),
        batch_size=_number(run, "batch_size", kind=int, default=32),
        learning_rate=_number(run, "learning_rate"),
        proximal_mu=_number(run, "proximal_mu", default=0.0),
        secure_aggregation=secure,
        threshold=threshold,
        clip_norm=_number(run, "clip_norm"),
        noise_multiplier=_number(run, "noise_multiplier", default=0.0),
        dp_delta=_number(run, "dp_delta", default=1e-5),
        epsilon_cap=None if cap is None else _number(run, "epsilon_cap"),
        quantization_bits=bits,
        round_timeout_seconds=_number(run, "round_timeout_seconds", default=120.0),
        strategy=str(run.get("strategy", "fedavg"))[:32],
        privacy_unit=str(run.get("privacy_unit") or "site"),
        dp=_parse_dp(run.get("dp")),
        validation_holdout=holdout,
        example_weighting=weighting,
    )
    if spec.privacy_unit not in ("record", "site", "none"):
        raise refuse("run.privacy_unit must be record, site or none")
    if spec.privacy_unit == "record":
        if spec.dp is None:
            raise refuse("a record-level run must carry its DP-SGD settings")
        if spec.dp["steps"] != steps_per_round(spec.local_epochs, spec.dp["sample_rate"]):
            raise refuse("run.dp.steps must be local_epochs * ceil(1 / sample_rate)")
        if spec.noise_multiplier:
            raise refuse("a record-level run adds no site-level noise")
        if spec.dp.get("distributed") and not distributed_applies(
            secure_aggregation=spec.secure_aggregation, sample_rate=spec.dp["sample_rate"],
            local_epochs=spec.local_epochs,
        ):  # fmt: skip
            raise refuse("distributed DP noise needs secure aggregation and one full-batch step per round")
    if not 1 <= spec.participant <= n:
        raise refuse("run.participant must be in 1..n_participants")
    if not 1 <= spec.rounds <= 100_000:
        raise refuse("run.rounds out of range")
    if not 1 <= spec.local_epochs <= MAX_LOCAL_EPOCHS or not 1 <= spec.batch_size <= MAX_BATCH_SIZE:
        raise refuse("run.local_epochs or run.batch_size out of range")
    if not 0 < spec.learning_rate <= 100 or spec.proximal_mu < 0:
        raise refuse("run.learning_rate or run.proximal_mu out of range")
    if not spec.clip_norm > 0 or spec.noise_multiplier < 0 or not 0 < spec.dp_delta < 1:
        raise refuse("run.clip_norm, noise_multiplier or dp_delta out of range")
    if secure:
        if n < 3:
            raise refuse("secure aggregation needs at least 3 sites")
        if not n // 2 < threshold <= n:
            raise refuse("the secure aggregation threshold must be a majority of the sites")
        if not 1 <= bits <= max_bits_for_sites(n):
            raise refuse(f"quantization_bits must be in 1..{max_bits_for_sites(n)} for {n} sites")
    return spec


def _parse_dp(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    from evaluator.runner.dpsgd import DPConfig

    try:
        config = DPConfig.parse(raw)
    except ValueError as exc:
        raise SiteRunError("policy_violation", f"run.dp: {exc}") from None
    if config.noise_multiplier <= 0:
        raise SiteRunError("policy_violation", "run.dp.noise_multiplier must be > 0")
    distributed = raw.get("distributed", False) if isinstance(raw, Mapping) else False
    if not isinstance(distributed, bool):
        raise SiteRunError("policy_violation", "run.dp.distributed must be a boolean")
    accountant = raw.get("accountant") if isinstance(raw, Mapping) else None  # the hub ledger's, if named
    if accountant not in (None, "rdp", "gdp") or (accountant == "gdp" and config.sample_rate != 1.0):
        raise SiteRunError("policy_violation", "run.dp.accountant must be rdp, or gdp with sample_rate 1")
    return {
        "example_clip_norm": config.example_clip_norm,
        "noise_multiplier": config.noise_multiplier,
        "sample_rate": config.sample_rate,
        "steps": config.steps,
        "distributed": distributed,  # noise_multiplier is the sum's; this site adds its share (issue 10)
        "accountant": accountant,  # None: gdp for q = 1, else rdp (record_level_ledger)
    }


# --- the participant --------------------------------------------------------------------------


@dataclass
class _Round:
    number: int
    attempt: Any
    done: set[str] = field(default_factory=set)
    old: dict[str, np.ndarray] | None = None
    new: dict[str, np.ndarray] | None = None
    report: dict[str, Any] = field(default_factory=dict)  # train_loss, n_examples, validation, ...
    secagg: SecAggClient | None = None
    training: Future | None = None  # the round's training, started when the keys are posted
    ahead_bundles: list[dict[str, Any]] | None = None  # this round's shares, sent with the last round's unmask

    def furthest(self) -> int:
        return max((_ORDER[p] for p in self.done if p in _ORDER), default=-1)


@dataclass
class ReleaseContext:
    """Ledger fields of the job the run belongs to."""

    job_id: int | str
    submission_id: Any
    task_id: Any
    vendor_id: Any


class SiteParticipant:
    def __init__(
        self,
        *,
        client: Any,
        spec: RunSpec,
        session: Session,
        data: Any,  # datasets.TrainData
        ledger: Any,  # evaluator.ledger.Ledger
        context: ReleaseContext,
        should_stop: Callable[[], bool] = lambda: False,
        poll_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        rng: np.random.Generator | None = None,
        max_offset_bytes: int = 512 * 1024 * 1024,
        work_dir: Any = None,
        long_poll_seconds: float = LONG_POLL_SECONDS,
    ) -> None:
        self.long_poll_seconds = long_poll_seconds
        self.client = client
        self.spec = spec
        self.session = session
        self.data = data
        self.ledger = ledger
        self.context = context
        self.should_stop = should_stop
        self.poll_seconds = poll_seconds
        self._sleep = sleep
        self._rng = rng
        self.max_offset_bytes = max_offset_bytes
        self.work_dir = work_dir
        self.w0: dict[str, np.ndarray] | None = None
        self.layout: Layout | None = None
        self._layout_posted = False
        self._round: _Round | None = None
        self._next_state: dict[str, Any] | None = None  # the state a post's answer carried
        self._ahead: tuple[int, str, SecAggClient] | None = None  # keys advertised for the next round
        self._ahead_shares: tuple[int, str, list[dict[str, Any]]] | None = None  # its shares, once made
        # One thread trains while the main loop exchanges keys and shares (secure aggregation).
        self._training = ThreadPoolExecutor(max_workers=1, thread_name_prefix=threading.current_thread().name)
        spent = sum(
            1
            for entry in ledger.iter_entries()
            if entry.kind == "update" and str(entry.job_id) == str(context.job_id)
        )
        self.privacy = spec.new_privacy_ledger(spent)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> str:
        """Take part until the run ends; returns its final status, or ``"abandoned"``.

        The state is long-polled (``since`` = the last version seen): the hub answers as soon as
        the phase changes. A hub that cannot hold the request answers at once with the same
        version; then the participant sleeps ``poll_seconds`` as before."""
        self._ensure_started()
        since: str | None = None
        try:
            while True:
                if self.should_stop():
                    return "abandoned"
                asked = time.monotonic()
                state = self._next_state or (
                    self.client.run_state(self.spec.id, since=since, wait=self.long_poll_seconds)
                    if since is not None
                    else self.client.run_state(self.spec.id)
                )
                from_post, self._next_state = self._next_state is not None, None
                status = state.get("status")
                if status != "running":
                    log.info("run %s: %s", self.spec.id, status)
                    return str(status)
                if self.step(state):
                    since = None
                    continue
                version = state.get("version")
                held = from_post or time.monotonic() - asked >= self.long_poll_seconds / 2
                if version is None or (version == since and not held):
                    self._sleep(self.poll_seconds)  # the hub did not hold the request
                since = version if isinstance(version, str) else None
        finally:
            self._training.shutdown(wait=True)

    def _ensure_started(self) -> None:
        if self.w0 is None:
            if not self.spec.validation_holdout and len(self.data.validation_rows):
                self._train_on_every_row()
            self.w0 = {n: np.asarray(v, dtype=np.float32) for n, v in self.session.start().items()}
            _, self.layout = flatten(self.w0)

    def _train_on_every_row(self) -> None:
        """The owner chose no validation holdout: rewrite the sandbox's inputs (the agent wrote
        them into ``work_dir`` with the holdout) before the sandbox starts."""
        from dataclasses import replace
        from pathlib import Path

        rows = np.arange(len(self.data.labels))
        self.data = replace(self.data, fit_rows=rows, validation_rows=rows[:0])
        if self.work_dir is not None:
            self.data.write_sandbox_inputs(Path(self.work_dir))

    def step(self, state: Mapping[str, Any]) -> bool:
        """Do what the state asks, if not done yet; returns whether anything was posted."""
        self._ensure_started()
        assert self.layout is not None
        phase = state.get("phase")
        if phase not in PHASES:
            log.warning("run %s: unknown phase %r", self.spec.id, phase)
            return False
        if phase == "layout":
            if self._layout_posted:
                return False
            n_examples = len(self.data.fit_rows) if self.spec.example_weighting else None
            self.client.post_layout(self.spec.id, self.layout.to_dict()["tensors"], n_examples)
            self._layout_posted = True
            return True
        self._check_layout(state.get("layout"))
        number = int(state.get("round", -1))
        config = state.get("round_config") or {}
        attempt = state.get("attempt", config.get("attempt") if isinstance(config, Mapping) else None)
        current = self._round
        if (
            current is None
            or (current.number, current.attempt) != (number, attempt)
            or (phase in _ORDER and phase in current.done and _ORDER[phase] < current.furthest())
        ):  # a new round, or the hub retries this one (it went back to an earlier phase)
            current = self._round = _Round(number, attempt)
        if phase in current.done:
            return False
        handler = getattr(self, f"_phase_{phase}")
        return bool(handler(current, state))

    def _check_layout(self, hub_layout: Any) -> None:
        if hub_layout is None:
            return
        assert self.layout is not None
        tensors = hub_layout.get("tensors") if isinstance(hub_layout, Mapping) else hub_layout
        try:
            fixed = Layout.from_dict({"tensors": tensors})
        except (TypeError, ValueError, KeyError) as exc:
            raise SiteRunError("policy_violation", f"the hub's layout is malformed: {exc}") from None
        if fixed != self.layout:
            raise SiteRunError("invalid_artifact", "the run's layout differs from this site's model")

    # -- phases ------------------------------------------------------------------------------

    def _phase_keys(self, rnd: _Round, state: Mapping[str, Any]) -> bool:
        # Keys and shares do not depend on the update: train while they are exchanged.
        rnd.training = self._training.submit(self._train, rnd, dict(state))
        assert self.layout is not None
        params = RoundParams(
            round_id=wire.round_id(self.spec.id, rnd.number, state.get("round_config")),
            threshold=self.spec.threshold,
            vector_length=self.layout.size,
        )
        ahead = self._ahead
        if ahead is not None and ahead[:2] == (rnd.number, params.round_id):
            rnd.secagg, self._ahead = ahead[2], None  # the keys advertised ahead (re-posting them is a no-op)
        else:
            rnd.secagg = SecAggClient(self.spec.participant, params)
        advertised = wire.keys_to_json(rnd.secagg.advertise())
        keys = {k: advertised[k] for k in ("mask_public", "enc_public")}
        body = {"agent_id": self.client.agent_id, "keys": keys}
        self._post(rnd, "keys", body)
        return True

    def _phase_shares(self, rnd: _Round, state: Mapping[str, Any]) -> bool:
        if "keys" not in rnd.done and not self._adopt_ahead_keys(rnd, state):
            return False  # joined late: this round goes on without this site
        if rnd.secagg is None:
            return False
        if rnd.ahead_bundles is not None:  # made for the same roster: the hub has them (or takes them now)
            bundles_json = rnd.ahead_bundles
        else:
            roster = wire.roster_from_json(state.get("roster"))
            bundles_json = [wire.bundle_to_json(b) for b in rnd.secagg.share_keys(roster)]
        body = {"agent_id": self.client.agent_id, "bundles": bundles_json}
        self._post(rnd, "shares", body)
        return True

    def _phase_masked(self, rnd: _Round, state: Mapping[str, Any]) -> bool:
        if "shares" not in rnd.done and not self._adopt_ahead_shares(rnd, state):
            return False  # this site's shares are not in this round: it goes on without it
        if rnd.secagg is None:
            return False
        received = wire.bundles_from_json(state.get("bundles"))
        if rnd.training is not None:
            rnd.training.result()  # re-raises what training raised (e.g. a policy violation)
        vector = self._update_vector(rnd, quantize=True, weight=self._example_weight(state))
        if vector is None:
            rnd.done.add("masked")
            return False
        masked = rnd.secagg.masked_input(vector, received)
        next_keys = self._next_round_keys(rnd, state)
        extra = {"next_keys": next_keys} if next_keys else None
        self._release(rnd, "masked", wire.vector_to_b64(masked, "<u4"), extra=extra)
        return True

    def _next_round_keys(self, rnd: _Round, state: Mapping[str, Any]) -> dict[str, str] | None:
        """Fresh keys for the next round, sent with this round's masked input
        (docs/federated-protocol.md, "Two phases per round"): used in that round only."""
        config = state.get("round_config") or {}
        next_id = config.get("next_secagg_round_id") if isinstance(config, Mapping) else None
        if not isinstance(next_id, str) or not next_id or self.layout is None:
            return None
        number = rnd.number + 1
        if self._ahead is None or self._ahead[:2] != (number, next_id):
            params = RoundParams(round_id=next_id, threshold=self.spec.threshold, vector_length=self.layout.size)
            self._ahead = (number, next_id, SecAggClient(self.spec.participant, params))
        advertised = wire.keys_to_json(self._ahead[2].advertise())
        return {k: advertised[k] for k in ("mask_public", "enc_public")}

    def _next_round_shares(self, rnd: _Round, state: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """The next round's encrypted shares, sent with this round's unmask answer, when the
        state carries that round's complete roster and it holds this site's keys as advertised."""
        config = state.get("round_config") or {}
        next_id = config.get("next_secagg_round_id") if isinstance(config, Mapping) else None
        number = rnd.number + 1
        if not state.get("next_roster") or self._ahead is None or self._ahead[:2] != (number, next_id):
            return None
        if self._ahead_shares is not None and self._ahead_shares[:2] == (number, next_id):
            return self._ahead_shares[2]
        client = self._ahead[2]
        try:
            roster = wire.roster_from_json(state.get("next_roster"))
            advertised = wire.keys_to_json(client.advertise())
            mine = [r for r in roster if r.site_id == self.spec.participant]
            if len(mine) != 1 or wire.keys_to_json(mine[0]) != advertised:
                return None  # the roster carries other keys for this site: not ours, do not share
            bundles = [wire.bundle_to_json(b) for b in client.share_keys(roster)]
        except Exception as exc:  # a malformed or too small roster: the shares phase remains
            log.warning("run %s: no shares ahead for round %s: %s", self.spec.id, number, exc)
            return None
        self._ahead_shares = (number, str(next_id), bundles)
        return bundles

    def _adopt_ahead_shares(self, rnd: _Round, state: Mapping[str, Any]) -> bool:
        """Round opened at ``masked``: its keys and shares went with the last round's masked and
        unmask posts. True when the hub holds them (a bundle from this site to itself is there)."""
        config = state.get("round_config") or {}
        round_id = wire.round_id(self.spec.id, rnd.number, config if isinstance(config, Mapping) else None)
        ahead, shares = self._ahead, self._ahead_shares
        if ahead is None or shares is None or ahead[:2] != (rnd.number, round_id) or shares[:2] != ahead[:2]:
            return False
        bundles = state.get("bundles") or []
        if not any(isinstance(b, Mapping) and b.get("sender") == self.spec.participant for b in bundles):
            return False
        rnd.secagg, rnd.ahead_bundles = ahead[2], shares[2]
        self._ahead = self._ahead_shares = None
        rnd.done.update(("keys", "shares"))
        rnd.training = self._training.submit(self._train, rnd, dict(state))
        return True

    def _adopt_ahead_keys(self, rnd: _Round, state: Mapping[str, Any]) -> bool:
        """Round opened at ``shares`` with the keys this site advertised during the last round."""
        config = state.get("round_config") or {}
        round_id = wire.round_id(self.spec.id, rnd.number, config if isinstance(config, Mapping) else None)
        roster = state.get("roster") or []
        mine = [r for r in roster if isinstance(r, Mapping) and r.get("participant") == self.spec.participant]
        if self._ahead is None or self._ahead[:2] != (rnd.number, round_id) or not mine:
            return False
        client = self._ahead[2]
        advertised = wire.keys_to_json(client.advertise())
        if any(mine[0].get(k) != advertised[k] for k in ("mask_public", "enc_public")):
            return False  # the roster carries other keys for this site: not ours, do not share
        rnd.secagg, self._ahead = client, None
        shares, self._ahead_shares = self._ahead_shares, None
        if shares is not None and shares[:2] == (rnd.number, round_id):
            rnd.ahead_bundles = shares[2]  # share_keys ran for this roster already: send the same bundles
        rnd.done.add("keys")
        rnd.training = self._training.submit(self._train, rnd, dict(state))
        return True

    def _phase_unmask(self, rnd: _Round, state: Mapping[str, Any]) -> bool:
        if "masked" not in rnd.done or rnd.secagg is None or rnd.report.get("withheld"):
            return False
        request = wire.unmask_request_from_json(state.get("unmask_request"))
        response = rnd.secagg.unmask_shares(request)
        body: dict[str, Any] = {"agent_id": self.client.agent_id, "response": wire.unmask_response_to_json(response)}
        next_shares = self._next_round_shares(rnd, state)
        if next_shares is not None:
            body["next_shares"] = next_shares
        self._post(rnd, "unmask", body)
        return True

    def _phase_update(self, rnd: _Round, state: Mapping[str, Any]) -> bool:
        self._train(rnd, state)
        vector = self._update_vector(rnd, quantize=False)
        if vector is None:
            rnd.done.add("update")
            return False
        self._release(rnd, "update", wire.vector_to_b64(vector, "<f4"))
        return True

    # -- work --------------------------------------------------------------------------------

    def _train(self, rnd: _Round, state: Mapping[str, Any]) -> None:
        assert self.w0 is not None
        offset = self._download_offset(rnd.number, state)
        config = self._round_config(state.get("round_config"))
        try:
            result = self.session.run_round(offset, config)
        except Exception as exc:
            if getattr(exc, "exit_code", None) == EXIT_POLICY:  # runner.train: state across examples, file ops
                raise SiteRunError(
                    "policy_violation", "the model changed its own state during training or used file ops"
                ) from exc
            raise
        rnd.old = {n: self.w0[n] + offset[n] for n in self.w0}
        rnd.new = {n: np.asarray(result.weights[n], dtype=np.float32) for n in self.w0}
        rnd.report = self._round_metrics(result)
        log.info(
            "run %s round %s: trained in %.1fs (loss %s, validation %s)",
            self.spec.id, rnd.number, result.duration_seconds, rnd.report["train_loss"], rnd.report["validation"],
        )  # fmt: skip

    def _round_config(self, overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "local_epochs": self.spec.local_epochs,
            "batch_size": self.spec.batch_size,
            "learning_rate": self.spec.learning_rate,
            "proximal_mu": self.spec.proximal_mu,
        }
        if isinstance(overrides, Mapping):  # the strategy may set these per round, within bounds
            checked = parse_run({**_spec_dict(self.spec), **{k: overrides[k] for k in config if k in overrides}})
            config.update(
                local_epochs=checked.local_epochs,
                batch_size=checked.batch_size,
                learning_rate=checked.learning_rate,
                proximal_mu=checked.proximal_mu,
            )
        config["seed"] = secrets.randbits(31)
        if self.spec.privacy_unit == "record":  # the hub's steps are for the run's local_epochs
            config["local_epochs"] = self.spec.local_epochs
            config["dp"] = dict(self.spec.dp or {})
            config["dp"].pop("accountant", None)  # the site's business, not the runner's
            if config["dp"].pop("distributed", False):  # any released sum of >= t shares carries sigma
                config["dp"]["noise_multiplier"] = site_noise_share(config["dp"]["noise_multiplier"], self.spec.threshold)
        return config

    def _download_offset(self, number: int, state: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """``D_r``: inline in the state when the hub put it there (small models), else downloaded."""
        import tempfile
        from pathlib import Path

        from safetensors.numpy import load

        assert self.w0 is not None and self.layout is not None
        cap = min(self.max_offset_bytes, 4 * self.layout.size + 64 * 1024 + 100 * len(self.w0))
        data = _inline_offset(state, number, cap)
        if data is None:
            with tempfile.TemporaryDirectory(dir=self.work_dir) as tmp:
                dest = Path(tmp) / "offset.safetensors"
                self.client.download_round_offset(self.spec.id, number, dest, max_bytes=cap)
                data = dest.read_bytes()
        try:
            tensors = load(data)
        except Exception as exc:
            raise SiteRunError("internal_error", f"the round offset is not safetensors: {type(exc).__name__}") from None
        if set(tensors) != set(self.w0):
            raise SiteRunError("internal_error", "the round offset does not name the model's tensors")
        offset = {}
        for name, value in tensors.items():
            if value.shape != self.w0[name].shape or not np.all(np.isfinite(value)):
                raise SiteRunError("internal_error", f"the round offset of {name!r} is malformed")
            offset[name] = np.asarray(value, dtype=np.float32)
        return offset

    def _round_metrics(self, result: Any) -> dict[str, Any]:
        """Validation accuracy/log loss and the training loss, computed here from predictions."""
        from evaluator import metrics
        from evaluator.outputs import validate_predictions

        data = self.data
        kind, n_classes = data.task_type, data.n_classes
        val = validate_predictions(
            np.asarray(result.val_predictions),
            n_rows=len(data.validation_rows),
            task_type=kind,
            n_classes=n_classes,
        )
        train = validate_predictions(
            np.asarray(result.train_predictions), n_rows=len(data.fit_rows), task_type=kind, n_classes=n_classes
        )
        names = ["accuracy", "log_loss"] if kind != "regression" else ["rmse"]
        names = [n for n in names if n in metrics.REGISTRY]
        loss_name = "log_loss" if kind != "regression" else "rmse"
        validation = (
            metrics.compute_metrics(kind, names, data.validation_labels, val, n_classes=n_classes)
            if len(data.validation_rows)
            else {}  # no holdout (the owner's choice): no validation metrics leave
        )
        train_loss = metrics.compute_metrics(kind, [loss_name], data.labels[data.fit_rows], train, n_classes=n_classes)
        record = self.spec.privacy_unit == "record"  # the training rows' loss is not a DP release
        return {
            "train_loss": None if record else round(float(train_loss[loss_name]), METRIC_DECIMALS),
            "n_examples": len(data.fit_rows),
            "validation": {k: round(float(v), METRIC_DECIMALS) for k, v in validation.items()},
            "n_validation": len(data.validation_rows),
        }

    def _example_weight(self, state: Mapping[str, Any]) -> float:
        """``n_k / cap`` under example weighting with secure aggregation (else 1): the masked
        update is scaled BEFORE clipping and noise, so it stays within the clip norm and the hub's
        bound checks hold as they are; the hub divides the sum by ``sum(n_k) / cap``."""
        config = state.get("round_config") or {}
        cap = config.get("example_cap") if isinstance(config, Mapping) else None
        if not self.spec.example_weighting or cap is None:
            return 1.0
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise SiteRunError("policy_violation", "round_config.example_cap must be a positive integer")
        return min(1.0, len(self.data.fit_rows) / cap)

    def _update_vector(self, rnd: _Round, *, quantize: bool, weight: float = 1.0) -> np.ndarray | None:
        """The clipped, noised (and quantized) update, or None when the budget forbids it."""
        cap = self.spec.epsilon_cap
        if cap is not None and self.privacy.would_exceed(cap):
            log.warning("run %s round %s: the epsilon cap would be passed; not posting", self.spec.id, rnd.number)
            rnd.report["withheld"] = True
            return None
        assert rnd.old is not None and rnd.new is not None
        new = rnd.new if weight == 1.0 else {n: rnd.old[n] + weight * (rnd.new[n] - rnd.old[n]) for n in rnd.new}
        vector, report = prepare_site_update(
            old_weights=rnd.old,
            new_weights=new,
            clip_norm=self.spec.clip_norm,
            noise_multiplier=self.spec.noise_multiplier if self.spec.privacy_unit == "site" else 0.0,
            n_sites=self.spec.n_participants,
            rng=self._rng,
            quantization_bits=self.spec.quantization_bits if quantize else None,
        )
        log.info(  # the norm stays in the site's log: it says something about the data
            "run %s round %s: update norm %.4g (clipped: %s)", self.spec.id, rnd.number,
            report.norm_before_clip, report.clipped,
        )  # fmt: skip
        return vector

    def _release(self, rnd: _Round, step: str, vector_b64: str, extra: Mapping[str, Any] | None = None) -> None:
        """Ledger first (kind ``update``, epsilon), then the post with its receipt."""
        from evaluator.client import canonical_json

        epsilon = self.privacy.epsilon_if(rounds=1)
        body: dict[str, Any] = {
            "agent_id": self.client.agent_id,
            "vector": vector_b64,
            "train_loss": rnd.report["train_loss"],
            "n_examples": rnd.report["n_examples"],
            "validation": rnd.report["validation"],
            "n_validation": rnd.report["n_validation"],
            "epsilon": epsilon if math.isfinite(epsilon) else None,
            **(extra or {}),  # e.g. the next round's public keys: released with it, in the ledger too
        }
        entry = self.ledger.append(
            job_id=self.context.job_id,
            submission_id=self.context.submission_id,
            task_id=self.context.task_id,
            vendor_id=self.context.vendor_id,
            kind="update",
            payload=canonical_json(body),
            epsilon=epsilon,
            delta=self.spec.dp_delta,
        )
        self.privacy.record_round()  # spent once it is in the ledger, whatever the post's fate
        body["ledger"] = {"sha256": entry.sha256, "bytes": entry.bytes}
        self._post(rnd, step, body)

    def _post(self, rnd: _Round, step: str, body: Mapping[str, Any]) -> None:
        from evaluator.client import HubRejected, LeaseLost

        try:
            # Held by the hub until the phase changes: the answer is the next phase (no long poll after it).
            answer = self.client.post_round(self.spec.id, rnd.number, step, body, wait=self.long_poll_seconds)
        except (HubRejected, LeaseLost) as exc:  # the phase closed without us: wait for the next
            log.warning("run %s round %s: the hub refused our %s: %s", self.spec.id, rnd.number, step, exc)
        else:  # the answer carries the state after our post: no extra request to learn it
            state = answer.get("state") if isinstance(answer, Mapping) else None
            self._next_state = dict(state) if isinstance(state, Mapping) and "status" in state else None
        rnd.done.add(step)


def _inline_offset(state: Mapping[str, Any] | None, number: int, cap: int) -> bytes | None:
    """The safetensors bytes of ``D_r`` the state carries for this round, if any (checked like a
    download: same cap, then parsed by the caller)."""
    import base64
    import binascii

    inline = state.get("offset") if isinstance(state, Mapping) else None
    if not isinstance(inline, Mapping) or inline.get("round") != number:
        return None
    raw = inline.get("safetensors")
    if not isinstance(raw, str) or len(raw) > 4 * cap // 3 + 4:
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None


def _spec_dict(spec: RunSpec) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(spec)
