"""What guarantee a fine-tuning run gives, in one place: the run page, the approvals page, the
vendor's request page and the API all show this summary (docs/federated-protocol.md).

Before approval it is computed from the task's policy and the request (an estimate of the ε the
planned rounds would spend); after approval from the run's own copy and its ledger.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from evaluator.federated.accounting import ACCOUNTANT
from evaluator.privacy.label_inference import label_guess_bound
from marketplace.finetuning.models import FineTuningRun, PrivacyUnit, RunStatus

GUARANTEES = {
    PrivacyUnit.RECORD: (
        "Record-level DP: every training row at every site is protected by DP-SGD (per-row clipping, "
        "Gaussian noise each step) run by the sites' own code; the same ε holds for every site's rows, "
        "and sites' ε are not added (each site's rows are separate data). Holds against hostile "
        "TorchScript models (their state is checked at every row)."
    ),
    PrivacyUnit.SITE: (
        "Site-level DP: noise on the aggregate protects each site's data as a whole; with few sites the "
        "model usually does not survive the noise. Rows inside a site have no separate guarantee."
    ),
    PrivacyUnit.NONE: (
        "No differential privacy: the task's owner opted out. Updates are clipped (and masked with secure "
        "aggregation) but a model can encode training data, e.g. every training label, in its updates."
    ),
}
COMPOSITION = "composed over all DP-SGD steps of all rounds at each site; parallel across sites (not added)"
DISTRIBUTED = (
    " Distributed noise: each round is one full-batch DP-SGD step per site under secure aggregation; "
    "each site adds only its share σ/√t of the noise and any sum the hub can unmask (of at least t "
    "sites) carries σ. The ε assumes at least t of the summed sites add their share honestly."
)


@dataclass(frozen=True)
class PrivacySummary:
    unit: str
    unit_label: str
    guarantee: str
    accountant: str
    composition: str
    delta: float | None
    epsilon_cap: float | None
    epsilon_spent: float | None  # per site (the same at every site) after the rounds so far
    epsilon_planned: float | None  # per site after all requested rounds (None: no DP)
    rounds_within_cap: int | None
    # For a classification task: the most any decoder holding the model could expect to name of
    # a training row's label at the planned epsilon (evaluator.privacy.label_inference), and chance.
    label_guess_bound: float | None
    label_chance: float | None
    warning: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def run_privacy_summary(run: FineTuningRun) -> PrivacySummary:
    from marketplace.finetuning.services import (
        _data_sites,
        _probe,
        has_noise,
        privacy_ledger,
        round_step_noise,
    )

    decided = run.status not in (RunStatus.REQUESTED, RunStatus.REJECTED) and bool(run.privacy_unit)
    if decided:
        subject, n = run, run.participants.count()
    else:  # an estimate from the task's policy as approval would copy it
        shards = _data_sites(run.task)
        subject, n = _probe(run.task, shards, run.min_sites, run.batch_size, run.local_epochs, run.rounds), len(shards)
    unit = subject.privacy_unit or PrivacyUnit.SITE
    private = has_noise(subject)
    spent = planned = within = None
    accountant = ACCOUNTANT
    if private and n:
        ledger = privacy_ledger(subject)
        accountant = ledger.accountant_name  # exact GDP for full-batch runs, RDP otherwise
        z = round_step_noise(subject, n)
        spent = _finite(ledger.epsilon) if decided else 0.0
        remaining = max(0, run.rounds - (run.rounds_completed if decided else 0))
        planned = _finite(ledger.epsilon_if(rounds=remaining, noise_multiplier=z)) if remaining else spent
        if subject.epsilon_cap is not None:
            within = (run.rounds_completed if decided else 0) + ledger.rounds_within(
                subject.epsilon_cap, max_rounds=max(run.rounds, 1)
            ) if unit == PrivacyUnit.RECORD else None  # fmt: skip
    warning = ""
    if not private:
        warning = GUARANTEES[PrivacyUnit.NONE] if unit == PrivacyUnit.NONE else "No noise: no DP guarantee."
    elif unit == PrivacyUnit.SITE:
        warning = "Only site-level DP: individual rows have no separate guarantee."
    elif within is not None and within < run.rounds:
        warning = f"The ε cap allows about {within} of the {run.rounds} requested rounds; the run stops there."
    guarantee = GUARANTEES[PrivacyUnit(unit)]
    n_classes = {"binary_classification": 2, "multiclass_classification": run.task.n_classes}.get(run.task.task_type)
    label_bound = label_chance = None
    if n_classes and n_classes >= 2 and unit == PrivacyUnit.RECORD:
        label_chance = round(1 / n_classes, 4)
        label_bound = 1.0 if planned is None else round(label_guess_bound(planned, float(subject.dp_delta), n_classes), 4)
    if decided and unit == PrivacyUnit.RECORD and private:
        from marketplace.finetuning.rounds import dp_settings

        if (dp_settings(run) or {}).get("distributed"):  # what the sites are actually told
            guarantee += DISTRIBUTED
    return PrivacySummary(
        unit=unit, unit_label=PrivacyUnit(unit).label, guarantee=guarantee,
        accountant=accountant if unit == PrivacyUnit.RECORD else "RDP of the Gaussian mechanism (Opacus), per round",
        composition=COMPOSITION, delta=subject.dp_delta if private else None,
        epsilon_cap=subject.epsilon_cap if private else None, epsilon_spent=spent, epsilon_planned=planned,
        rounds_within_cap=within, label_guess_bound=label_bound, label_chance=label_chance, warning=warning,
    )  # fmt: skip


def record_level_norm_bound(run: FineTuningRun, *, k: int = 1) -> float | None:
    """Once the model's size is known (``run.layout``, fixed in round 0): the largest norm an
    honest record-level update, or an unmasked sum of ``k`` of them, can have with the real
    parameter count (``evaluator.privacy.update_bound``). None where it does not apply (no layout
    yet, not record-level DP-SGD). Never above the run's ``clip_norm`` (the sites clip at that), so
    the hub's check may use ``min(k clip_norm, this)``."""
    from evaluator.privacy.distributed import site_noise_share
    from evaluator.privacy.update_bound import record_level_update_bound
    from marketplace.finetuning.defaults import smallest_fit_rows
    from marketplace.finetuning.offsets import layout_of
    from marketplace.finetuning.services import _data_sites, is_record_level

    if not run.layout or not is_record_level(run) or not run.noise_multiplier or not run.learning_rate:
        return None
    sigma = float(run.noise_multiplier)
    if run.dp_distributed:
        sigma = site_noise_share(sigma, int(run.threshold or 1))
    if run.example_weighting and run.example_cap:
        # a site releases (n_k / cap) x its update, whose noise is divided by q n_k: by q cap in all
        rows = int(run.example_cap)
    else:
        rows = smallest_fit_rows(_data_sites(run.task))
    bound = record_level_update_bound(
        learning_rate=float(run.learning_rate), steps=int(run.dp_steps_per_round or 1),
        sample_rate=float(run.dp_sample_rate or 1.0), example_clip_norm=float(run.example_clip_norm or 1.0),
        noise_multiplier=sigma, min_rows=rows, n_parameters=layout_of(run.layout).size, n_sites=k,
    )  # fmt: skip
    return min(bound, k * float(run.clip_norm))
