"""Fine-tuning runs: request, owner's decision, stop, and the end of a run (docs/federated-protocol.md).

The rounds themselves (phase posts, advancement, aggregation) live in ``rounds.py``.
Every write here takes the run row with ``select_for_update`` and writes its audit row in the
same transaction; Celery work (the fine-tuned submission's check) starts only after commit.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from evaluator.federated.accounting import (
    PrivacyLedger,
    effective_noise_multiplier,
    record_level_epsilon,
    record_level_ledger,
)
from evaluator.federated.secagg import default_threshold
from evaluator.federated.strategies import get_strategy
from evaluator.federated.updates import max_bits_for_sites
from evaluator.privacy.distributed import applies as distributed_applies
from evaluator.privacy.distributed import site_noise_share
from evaluator.privacy.update_bound import record_level_update_bound
from marketplace.audit.services import audit_record
from marketplace.catalog.models import DataShard, Task, TaskStatus
from marketplace.core.errors import Conflict, DomainError
from marketplace.finetuning.defaults import (
    ROUND_EPSILON_CAP,
    round_noise_floor,
    run_settings,
    smallest_fit_rows,
    task_noise_multiplier,
)
from marketplace.finetuning.models import (
    FineTuningRun,
    Participant,
    Phase,
    PrivacyUnit,
    ProtocolMessage,
    RunStatus,
    StrategyName,
)
from marketplace.jobs.models import TERMINAL_STATUSES, Job, JobKind, JobStatus
from marketplace.submissions.models import ArtifactFormat, Submission, SubmissionStatus
from marketplace.submissions.visibility import results_are_visible

TRAINABLE_FORMATS = {ArtifactFormat.TORCHSCRIPT, ArtifactFormat.PYTHON_PACKAGE}
MAX_FAILED_ROUNDS = 3
FEDPROX_DEFAULT_MU = 0.01  # FedProx's own default (evaluator.federated.strategies.FedProx)
#: Each strategy's parameters and their defaults (portal, API and docs show these).
STRATEGY_DEFAULTS = {
    StrategyName.FEDAVG: {"server_learning_rate": 1.0, "server_momentum": 0.0},
    StrategyName.FEDPROX: {"server_learning_rate": 1.0, "proximal_mu": FEDPROX_DEFAULT_MU},
    StrategyName.FEDADAM: {"eta": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
}

# Which strategy_params each strategy takes (the rest of its constructor comes from the run).
STRATEGY_PARAMS = {
    StrategyName.FEDAVG: {"server_learning_rate", "server_momentum"},
    StrategyName.FEDPROX: {"server_learning_rate", "proximal_mu"},
    StrategyName.FEDADAM: {"eta", "beta1", "beta2", "tau"},
}


# --------------------------------------------------------------------------- privacy helpers


def has_noise(run: FineTuningRun) -> bool:
    """Whether the run has a DP guarantee at all (record- or site-level noise)."""
    return run.privacy_unit != PrivacyUnit.NONE and bool(run.noise_multiplier)


def is_record_level(run: FineTuningRun) -> bool:
    return run.privacy_unit == PrivacyUnit.RECORD


def min_contributors(run: FineTuningRun) -> int:
    """The fewest sites whose updates may make a round: the vendor's minimum, and t with secagg."""
    return max(run.min_sites, run.threshold or 1)


def round_noise_multiplier(run: FineTuningRun, n_participants: int, n_contributors: int) -> float:
    """The Gaussian mechanism one round is, seen from one site's data (site-level unit).

    With secure aggregation the hub sees only the sum, whose noise is ``z * sqrt(k / n)`` for k of
    n sites contributing (each adds ``z C / sqrt(n)``). Without it the hub sees every update alone,
    each carrying only its own share of the noise: ``z / sqrt(n)``.
    """
    z = float(run.noise_multiplier or 0.0)
    if run.secure_aggregation:
        return effective_noise_multiplier(z, n_participants, n_contributors)
    return z / math.sqrt(n_participants)


def worst_case_noise_multiplier(run: FineTuningRun, n_participants: int) -> float:
    """What every site charges itself per round (it cannot check how many shares made the sum);
    the hub charges the same, so the run has ONE epsilon (docs/federated-protocol.md)."""
    return round_noise_multiplier(run, n_participants, min(int(run.threshold or 1), n_participants))


def privacy_ledger(run: FineTuningRun) -> PrivacyLedger:
    if run.privacy_ledger:
        return PrivacyLedger.from_dict(run.privacy_ledger)
    if is_record_level(run):
        return record_level_ledger(
            noise_multiplier=float(run.noise_multiplier or 0.0), sample_rate=float(run.dp_sample_rate or 1.0),
            local_epochs=run.local_epochs, delta=float(run.dp_delta or 1e-5),
        )  # fmt: skip
    return PrivacyLedger(
        delta=float(run.dp_delta or 1e-5), noise_multiplier=float(run.noise_multiplier or 0.0)
    )


def round_step_noise(run: FineTuningRun, n_participants: int) -> float:
    """The noise multiplier one round is charged at, identically on the hub and at each site."""
    if is_record_level(run):
        return float(run.noise_multiplier or 0.0)
    return worst_case_noise_multiplier(run, n_participants)


def next_round_allowed(run: FineTuningRun, n_participants: int) -> bool:
    """False when one more round would take epsilon past the owner's cap."""
    if run.epsilon_cap is None or not has_noise(run):
        return True
    return not privacy_ledger(run).would_exceed(run.epsilon_cap, noise_multiplier=round_step_noise(run, n_participants))


def dp_sample_rate(batch_size: int, shards: list[DataShard]) -> float:
    """q so that the smallest site's expected batch is ``batch_size`` (its train split less the
    20 % validation holdout); every site samples at the same q, so every site has the same epsilon."""
    rows = []
    for shard in shards:
        train = shard.split_sizes.get("train") if isinstance(shard.split_sizes, dict) else None
        rows.append(int(train) if isinstance(train, int) and train > 0 else int(shard.row_count))
    fit = max(1, int(min(rows) * 0.8)) if rows else 1
    return min(1.0, batch_size / fit)


def estimate_epsilon(
    *, unit: str, noise_multiplier: float, rounds: int, delta: float, local_epochs: int = 1,
    sample_rate: float = 1.0, n_sites: int = 1, secure_aggregation: bool = True, threshold: int | None = None,
) -> float:  # fmt: skip
    """The epsilon a run would spend after ``rounds`` rounds (the owner's form shows it)."""
    if unit == PrivacyUnit.NONE or not noise_multiplier:
        return math.inf
    if unit == PrivacyUnit.RECORD:
        return record_level_epsilon(rounds=rounds, noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                                    local_epochs=local_epochs, delta=delta)  # fmt: skip
    seen = (threshold or default_threshold(n_sites)) if secure_aggregation else 1
    z = effective_noise_multiplier(noise_multiplier, n_sites, min(seen, n_sites))
    return PrivacyLedger(delta=delta, noise_multiplier=z).epsilon_if(rounds=rounds)


# --------------------------------------------------------------------------- request and decision


def _number(value: Any, field: str, *, low: float, high: float, integer: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise DomainError(f"{field} must be {kind} between {low} and {high}.", code="invalid_run",
                          details={field: [f"between {low} and {high}"]})  # fmt: skip
    return value


def _check_strategy(strategy: str, params: dict, learning_rate: float, local_epochs: int) -> dict:
    if strategy not in StrategyName.values:
        raise DomainError(f"Unknown strategy {strategy!r}.", code="invalid_run")
    if not isinstance(params, dict):
        raise DomainError("strategy_params must be an object.", code="invalid_run")
    unknown = set(params) - STRATEGY_PARAMS[StrategyName(strategy)]
    if unknown:
        raise DomainError(
            f"Unknown strategy_params for {strategy}: {', '.join(sorted(unknown))}.", code="invalid_run"
        )
    for key, value in params.items():
        _number(value, f"strategy_params.{key}", low=0.0, high=1e3)
    try:
        get_strategy(strategy, learning_rate=learning_rate, local_epochs=local_epochs, **params)
    except (TypeError, ValueError) as exc:
        raise DomainError(f"Invalid strategy_params: {exc}", code="invalid_run") from None
    return {k: float(v) for k, v in params.items()}


def _data_sites(task: Task) -> list[DataShard]:
    return list(DataShard.objects.filter(task=task).select_related("site").order_by("site_id"))


def _probe(
    task: Task, shards: list[DataShard], min_sites: int, batch_size: int, local_epochs: int, rounds: int
) -> FineTuningRun:
    """An unsaved run with the task's privacy settings, as approval would copy them (sigma left
    empty by the owner: calibrated to the epsilon cap over ``rounds``)."""
    n = len(shards)
    unit = task.fl_privacy_unit
    q = dp_sample_rate(batch_size, shards) if unit == PrivacyUnit.RECORD else 1.0
    sigma = None
    if unit != PrivacyUnit.NONE and n:
        sigma = task_noise_multiplier(task, rounds=rounds, sample_rate=q, local_epochs=local_epochs)
    return FineTuningRun(
        privacy_unit=unit, noise_multiplier=sigma, dp_delta=task.fl_dp_delta, rounds=rounds,
        epsilon_cap=task.fl_epsilon_cap, secure_aggregation=task.fl_secure_aggregation, min_sites=min_sites,
        threshold=default_threshold(n) if task.fl_secure_aggregation else None, local_epochs=local_epochs,
        batch_size=batch_size, example_clip_norm=task.fl_example_clip_norm if unit == PrivacyUnit.RECORD else None,
        dp_sample_rate=q if unit == PrivacyUnit.RECORD else None,
    )  # fmt: skip


def _check_task_policy(
    task: Task, shards: list[DataShard], min_sites: int, *, batch_size: int, local_epochs: int, rounds: int,
    artifact_format: str,
) -> None:  # fmt: skip
    """Refuses what the task's privacy policy cannot support with the sites it has."""
    n_sites = len(shards)
    if not task.fine_tuning_allowed:
        raise Conflict("The task's owner does not allow fine-tuning on it.", code="fine_tuning_not_allowed")
    if task.status != TaskStatus.OPEN:
        raise Conflict("The task is not open.", code="task_not_open")
    if n_sites == 0:
        raise Conflict("No site holds data for this task yet.", code="no_data_sites")
    if task.fl_secure_aggregation and n_sites < 3:
        raise Conflict(
            f"The task requires secure aggregation, which needs at least 3 sites with data; it has {n_sites}. "
            "With 2 sites the aggregate minus one site's own update reveals the other's.",
            code="secure_aggregation_needs_3_sites",
        )
    if min_sites > n_sites:
        raise Conflict(
            f"min_sites is {min_sites} but the task has {n_sites} site(s) with data.", code="too_few_sites"
        )
    unit = task.fl_privacy_unit
    if unit not in PrivacyUnit.values:
        raise Conflict(f"The task's privacy unit {unit!r} is unknown.", code="invalid_privacy_policy")
    if unit == PrivacyUnit.RECORD and artifact_format != ArtifactFormat.TORCHSCRIPT:
        raise DomainError(
            "Record-level DP-SGD (the task's privacy) needs a TorchScript model: a Python package runs its own "
            "training loop, which the sites cannot hold to per-example clipping.",
            code="not_trainable",
        )
    probe = _probe(task, shards, min_sites, batch_size, local_epochs, rounds)
    if unit != PrivacyUnit.NONE and not probe.noise_multiplier:
        raise Conflict(
            "The task asks for DP but adds no noise; set a noise multiplier, or opt out of DP explicitly "
            "(privacy unit 'none').",
            code="epsilon_cap_without_noise",
        )
    if unit != PrivacyUnit.NONE and task.fl_epsilon_cap is not None:
        if not next_round_allowed(probe, n_sites):
            raise Conflict(
                "The task's epsilon cap does not allow a single round.", code="epsilon_cap_too_low"
            )


@transaction.atomic
def run_request(
    *,
    parent: Submission,
    actor,
    rounds: int,
    learning_rate: float | None = None,
    local_epochs: int | None = None,
    batch_size: int | None = None,
    strategy: str = StrategyName.FEDAVG,
    strategy_params: dict | None = None,
    min_sites: int = 1,
    round_timeout_seconds: int = 600,
) -> FineTuningRun:
    """A vendor asks to fine-tune one of its scored, trainable submissions on the task's sites.
    What it leaves empty (None) the hub fills in (``finetuning.defaults``; FedSGD for record-level)."""
    task = Task.objects.get(id=parent.task_id)
    if parent.is_fine_tuned:
        raise DomainError("Fine-tune the original submission, not a fine-tuned one.", code="not_trainable")
    if parent.artifact_format not in TRAINABLE_FORMATS:
        raise DomainError(
            "Only TorchScript and Python model packages can be fine-tuned.", code="not_trainable"
        )
    # "pending" until its release time, like every view of the vendor's (docs/disclosure.md).
    if parent.status != SubmissionStatus.SCORED or not results_are_visible(parent, now=timezone.now()):
        raise Conflict("Only a scored submission can be fine-tuned.", code="not_scored")
    rounds = int(_number(rounds, "rounds", low=1, high=1000, integer=True))
    if local_epochs is not None:
        local_epochs = int(_number(local_epochs, "local_epochs", low=1, high=100, integer=True))
    if batch_size is not None:
        batch_size = int(_number(batch_size, "batch_size", low=1, high=65536, integer=True))
    if learning_rate is not None:
        learning_rate = float(_number(learning_rate, "learning_rate", low=1e-9, high=10.0))
    min_sites = int(_number(min_sites, "min_sites", low=1, high=1000, integer=True))
    timeout = int(_number(round_timeout_seconds, "round_timeout_seconds", low=10, high=86400, integer=True))
    if not isinstance(strategy_params or {}, dict):
        raise DomainError("strategy_params must be an object.", code="invalid_run")
    shards = _data_sites(task)
    chosen = run_settings(task, shards, rounds=rounds, batch_size=batch_size, local_epochs=local_epochs,
                          learning_rate=learning_rate, strategy=strategy, strategy_params=strategy_params or {})  # fmt: skip
    params = _check_strategy(strategy, chosen.strategy_params, chosen.learning_rate, chosen.local_epochs)
    _check_task_policy(task, shards, min_sites, batch_size=chosen.batch_size, local_epochs=chosen.local_epochs,
                       rounds=rounds, artifact_format=parent.artifact_format)  # fmt: skip
    run = FineTuningRun.objects.create(
        task=task, parent=parent, vendor_id=parent.vendor_id, requested_by=actor, rounds=rounds,
        local_epochs=chosen.local_epochs, batch_size=chosen.batch_size, learning_rate=chosen.learning_rate,
        strategy=strategy, strategy_params=params, min_sites=min_sites, round_timeout_seconds=timeout,
        hub_defaults=chosen.defaults,
    )  # fmt: skip
    audit_record(action="finetuning.requested", obj=run, actor_user=actor,
                 data={"parent": parent.id, "rounds": rounds, "strategy": strategy})  # fmt: skip
    return run


def _lock(run: FineTuningRun) -> FineTuningRun:
    return FineTuningRun.objects.select_for_update().get(id=run.id)


@transaction.atomic
def run_approve(*, run: FineTuningRun, actor, validation_holdout: bool = True) -> FineTuningRun:
    """The owner starts the run: privacy settings are copied from the task, one train job per site.
    ``validation_holdout`` (the owner's choice, default on): each site keeps 20 % of its train rows
    out of training and reports validation metrics on them; off, every row trains (protocol A)."""
    run = _lock(run)
    if run.status != RunStatus.REQUESTED:
        raise Conflict("Only a requested run can be approved.", code="invalid_state")
    task = Task.objects.get(id=run.task_id)
    shards = _data_sites(task)
    parent = Submission.objects.get(id=run.parent_id)
    _check_task_policy(task, shards, run.min_sites, batch_size=run.batch_size, local_epochs=run.local_epochs,
                       rounds=run.rounds, artifact_format=parent.artifact_format)  # fmt: skip
    n = len(shards)
    probe = _probe(task, shards, run.min_sites, run.batch_size, run.local_epochs, run.rounds)
    run.privacy_unit = probe.privacy_unit
    run.example_clip_norm = probe.example_clip_norm
    run.dp_sample_rate = probe.dp_sample_rate
    run.clip_norm = task.fl_clip_norm
    run.noise_multiplier = float(probe.noise_multiplier or 0.0)  # none: no sigma; empty: calibrated
    if run.privacy_unit != PrivacyUnit.NONE and task.fl_noise_multiplier is None:
        reason = f"calibrated: {run.rounds} rounds spend exactly the ε cap {task.fl_epsilon_cap:g} (δ {task.fl_dp_delta:g})"
        if run.privacy_unit == PrivacyUnit.RECORD and task.fl_epsilon_cap is not None:
            sample_rate = float(probe.dp_sample_rate or 1.0)
            floor = round_noise_floor(task, sample_rate=sample_rate, local_epochs=run.local_epochs)
            if run.noise_multiplier <= floor * (1 + 1e-9):  # the per-round cap binds: fewer rounds than the cap's
                reason = (f"the per-round ε cap {ROUND_EPSILON_CAP:g} (σ ≥ {floor:.3g}): no round may cost more, so "
                          f"{run.rounds} rounds spend at most the ε cap {task.fl_epsilon_cap:g} (δ {task.fl_dp_delta:g})")
        run.hub_defaults = {**run.hub_defaults, "noise_multiplier": {"value": run.noise_multiplier, "reason": reason}}
    run.dp_delta = task.fl_dp_delta
    run.epsilon_cap = task.fl_epsilon_cap if run.privacy_unit != PrivacyUnit.NONE else None
    run.secure_aggregation = task.fl_secure_aggregation
    run.validation_holdout = bool(validation_holdout)
    run.robust_rule = "" if task.fl_secure_aggregation else task.fl_robust_rule
    run.threshold = default_threshold(n) if task.fl_secure_aggregation else None
    run.quantization_bits = (
        min(task.fl_quantization_bits, max_bits_for_sites(n)) if task.fl_secure_aggregation else None
    )
    if run.robust_rule == "trimmed_mean" and n < 3:
        raise Conflict("A trimmed mean needs at least 3 sites.", code="too_few_sites")
    run.privacy_ledger = {}
    ledger = privacy_ledger(run)
    run.dp_steps_per_round = ledger.steps_per_round if is_record_level(run) else None
    # FedSGD-shaped record-level rounds under secure aggregation split the noise across the sites
    # (evaluator.privacy.distributed: each adds sigma/sqrt(t), the sum carries sigma; issue 10)
    run.dp_distributed = is_record_level(run) and distributed_applies(
        secure_aggregation=run.secure_aggregation, sample_rate=float(run.dp_sample_rate or 1.0),
        local_epochs=run.local_epochs,
    )  # fmt: skip
    run.privacy_ledger = ledger.to_dict()
    if is_record_level(run) and run.noise_multiplier:
        _record_level_clip_norm(run, shards, float(task.fl_clip_norm))
    for number, shard in enumerate(shards, start=1):
        job = Job.objects.create(
            kind=JobKind.TRAIN, submission_id=run.parent_id, site=shard.site, status=JobStatus.QUEUED
        )
        Participant.objects.create(run=run, site=shard.site, number=number, job=job)
    now = timezone.now()
    run.status = RunStatus.RUNNING
    run.decided_by = actor
    run.approved_at = now
    run.current_round, run.attempt = 0, 0
    run.phase, run.phase_started_at, run.phase_data = Phase.LAYOUT, now, {}
    run.save()
    audit_record(action="finetuning.approved", obj=run, actor_user=actor,
                 data={"sites": n, "secure_aggregation": run.secure_aggregation, "threshold": run.threshold})  # fmt: skip
    return run


def _record_level_clip_norm(run: FineTuningRun, shards: list[DataShard], task_bound: float) -> None:
    """The update bound DP-SGD itself guarantees (``evaluator.privacy.update_bound``), so the agent's
    clip never cuts an honest record-level update; the task's bound where it is larger."""
    from django.conf import settings

    sigma = float(run.noise_multiplier)
    if run.dp_distributed:
        sigma = site_noise_share(sigma, int(run.threshold or 1))
    bound = record_level_update_bound(
        learning_rate=float(run.learning_rate), steps=int(run.dp_steps_per_round or 1),
        sample_rate=float(run.dp_sample_rate or 1.0), example_clip_norm=float(run.example_clip_norm or 1.0),
        noise_multiplier=sigma, min_rows=smallest_fit_rows(shards),
        n_parameters=int(settings.VAULTBENCH_FL_MAX_PARAMETERS),
    )  # fmt: skip
    if bound > task_bound:
        run.clip_norm = round(bound, 6)
        run.hub_defaults = {**run.hub_defaults, "clip_norm": {
            "value": run.clip_norm,
            "reason": f"record-level: the most a DP-SGD round can move the weights (lr × steps × C × "
            f"(1 + σ_site (√d + 8) / n_min) / q, d ≤ {settings.VAULTBENCH_FL_MAX_PARAMETERS}), above the "
            f"task's {task_bound:g}, so the sites' clip never cuts an update"}}  # fmt: skip


@transaction.atomic
def run_reject(*, run: FineTuningRun, actor) -> FineTuningRun:
    run = _lock(run)
    if run.status != RunStatus.REQUESTED:
        raise Conflict("Only a requested run can be rejected.", code="invalid_state")
    run.status, run.decided_by, run.finished_at = RunStatus.REJECTED, actor, timezone.now()
    run.save(update_fields=["status", "decided_by", "finished_at", "updated_at"])
    audit_record(action="finetuning.rejected", obj=run, actor_user=actor)
    return run


@transaction.atomic
def run_stop(*, run: FineTuningRun, actor) -> FineTuningRun:
    """The vendor or the owner ends a run early; no fine-tuned submission is made."""
    run = _lock(run)
    if run.status not in (RunStatus.REQUESTED, RunStatus.RUNNING):
        raise Conflict("The run has already ended.", code="invalid_state")
    run_end(run=run, status=RunStatus.STOPPED, reason="stopped", actor=actor)
    return run


# --------------------------------------------------------------------------- end of a run


def run_end(*, run: FineTuningRun, status: str, reason: str = "", actor=None) -> None:
    """Terminal state for a locked run: its train jobs end, its protocol messages go."""
    now = timezone.now()
    ProtocolMessage.objects.filter(run=run).delete()
    job_status = JobStatus.SUCCEEDED if status == RunStatus.COMPLETED else JobStatus.FAILED
    Job.objects.filter(fl_participant__run=run).exclude(status__in=TERMINAL_STATUSES).update(
        status=job_status, lease_holder="", lease_expires_at=None, finished_at=now, updated_at=now
    )
    run.status, run.status_reason, run.finished_at = status, reason, now
    run.phase, run.phase_started_at, run.phase_data = "", None, {}
    run.save(update_fields=["status", "status_reason", "finished_at", "phase", "phase_started_at", "phase_data",
                            "updated_at"])  # fmt: skip
    audit_record(action=f"finetuning.{status}", obj=run, actor_user=actor, data={"reason": reason})


def run_finish(*, run: FineTuningRun, reason: str = "") -> Submission:
    """The run is done: the fine-tuned submission (parent's artifact + final offset) is evaluated
    like any upload. It uses no submission quota: the owner approved the run."""
    from marketplace.submissions.tasks import enqueue_submission_check

    parent = Submission.objects.get(id=run.parent_id)
    with run.offset.open("rb") as stored:
        offset_bytes = stored.read()
    child = Submission(
        vendor_id=parent.vendor_id, task_id=parent.task_id, created_by=run.requested_by,
        name=f"{parent.name} (fine-tuned, run {run.id})"[:120],
        description=f"Federated fine-tuning of submission {parent.id}: {run.rounds_completed} round(s), {run.strategy}.",
        artifact=parent.artifact.name, artifact_format=parent.artifact_format,
        original_filename=parent.original_filename, size=parent.size, sha256=parent.sha256,
        parent=parent, is_fine_tuned=True, quota_refunded=True,
        weights_offset_sha256=hashlib.sha256(offset_bytes).hexdigest(),
    )  # fmt: skip
    child.weights_offset.save("weights_offset.safetensors", ContentFile(offset_bytes), save=False)
    child.save()
    # Its evaluation is a release like any upload's: paid from the same budgets, or not run at all
    # (the check fails a submission without a reservation).
    from marketplace.budgets.services import BudgetExhausted, budget_reserve

    try:
        with transaction.atomic():
            budget_reserve(task=child.task, vendor_id=child.vendor_id, submission=child)
    except BudgetExhausted as exhausted:
        audit_record(action="submission.budget_exhausted", obj=child, data={"message": exhausted.message})
    audit_record(action="submission.created", obj=child,
                 data={"parent": parent.id, "finetuning_run": run.id, "sha256": parent.sha256})  # fmt: skip
    run.result = child
    run.save(update_fields=["result", "updated_at"])
    run_end(run=run, status=RunStatus.COMPLETED, reason=reason)
    transaction.on_commit(lambda: enqueue_submission_check(child.id))
    return child
