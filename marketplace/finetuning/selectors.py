from django.db.models import Q, QuerySet

from marketplace.accounts.selectors import organization_ids_of
from marketplace.finetuning.models import FineTuningRun, Participant, RoundRecord


def run_list_visible_to(*, user) -> QuerySet[FineTuningRun]:
    """Vendors see their own runs; data owners see the runs on their tasks."""
    org_ids = organization_ids_of(user=user)
    return (
        FineTuningRun.objects.filter(Q(vendor_id__in=org_ids) | Q(task__organization_id__in=org_ids))
        .select_related("task", "vendor", "parent", "result")
        .order_by("-created_at", "-id")
    )


def run_rounds(*, run: FineTuningRun) -> QuerySet[RoundRecord]:
    return RoundRecord.objects.filter(run=run).order_by("round", "attempt")


def run_participants(*, run: FineTuningRun) -> QuerySet[Participant]:
    return Participant.objects.filter(run=run).select_related("site", "job").order_by("number")


def run_payload_for_job(*, job) -> dict | None:
    """The ``run`` part of a train job's claim (docs/federated-protocol.md)."""
    participant = Participant.objects.filter(job=job).select_related("run").first()
    if participant is None:
        return None
    run = participant.run
    from marketplace.finetuning.rounds import (
        dp_settings,
        n_participants,
        proximal_mu,
        quantization_q,
        site_noise_multiplier,
    )

    n = n_participants(run)
    return {
        "id": run.id,
        "participant": participant.number,
        "n_participants": n,
        "rounds": run.rounds,
        "local_epochs": run.local_epochs,
        "batch_size": run.batch_size,
        "learning_rate": run.learning_rate,
        "strategy": run.strategy,
        "proximal_mu": proximal_mu(run),
        "secure_aggregation": run.secure_aggregation,
        "validation_holdout": run.validation_holdout,
        "example_weighting": run.example_weighting,
        "threshold": run.threshold,
        "privacy_unit": run.privacy_unit or "site",
        "dp": dp_settings(run),
        "clip_norm": run.clip_norm,
        "noise_multiplier": site_noise_multiplier(run),
        "dp_delta": run.dp_delta,
        "epsilon_cap": run.epsilon_cap,
        "quantization_bits": run.quantization_bits,
        "quantization_range": quantization_q(run, n) if run.secure_aggregation else None,
        "round_timeout_seconds": run.round_timeout_seconds,
    }
