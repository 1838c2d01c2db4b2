"""Federated fine-tuning runs: the hub's side of docs/federated-protocol.md.

The hub keeps the global model only as an offset ``D_t`` from the parent's own weights, the
aggregated per-round curves, and -- for the round in progress only -- the protocol messages
(public keys, ciphertexts it cannot read, masked vectors, revealed shares). Those rows are
deleted as soon as the round is aggregated or fails.
"""

import uuid

from django.conf import settings
from django.db import models


class RunStatus(models.TextChoices):
    REQUESTED = "requested", "Requested"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"
    REJECTED = "rejected", "Rejected by the owner"


ACTIVE_STATUSES = {RunStatus.REQUESTED, RunStatus.RUNNING}


class Phase(models.TextChoices):
    LAYOUT = "layout", "Sites report the parameter layout"
    KEYS = "keys", "Sites train, then advertise keys"
    SHARES = "shares", "Sites share their secrets"
    MASKED = "masked", "Sites post masked updates"
    UNMASK = "unmask", "Sites reveal shares"
    UPDATE = "update", "Sites post updates (no secure aggregation)"


class PrivacyUnit(models.TextChoices):
    RECORD = "record", "Record-level DP-SGD at each site (each training row)"
    SITE = "site", "Site-level noise on the aggregate (a whole site)"
    NONE = "none", "No DP guarantee (the owner opted out)"


class StrategyName(models.TextChoices):
    FEDAVG = "fedavg", "FedAvg"
    FEDPROX = "fedprox", "FedProx"
    FEDADAM = "fedadam", "FedAdam"


class RobustRule(models.TextChoices):
    MEAN = "mean", "Mean"
    MEDIAN = "median", "Coordinate-wise median"
    TRIMMED_MEAN = "trimmed_mean", "Trimmed mean"
    NORM_BOUND = "norm_bound", "Norm bound, then mean"


def _run_file(instance, filename: str) -> str:
    return f"finetuning/{uuid.uuid4().hex}/{filename}"


class FineTuningRun(models.Model):
    task = models.ForeignKey("catalog.Task", on_delete=models.PROTECT, related_name="finetuning_runs")
    parent = models.ForeignKey(
        "submissions.Submission", on_delete=models.PROTECT, related_name="finetuning_runs"
    )
    vendor = models.ForeignKey(
        "accounts.Organization", on_delete=models.PROTECT, related_name="finetuning_runs"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    # What the vendor asked for.
    rounds = models.PositiveIntegerField()
    local_epochs = models.PositiveIntegerField(default=1)
    batch_size = models.PositiveIntegerField(default=32)
    learning_rate = models.FloatField()
    strategy = models.CharField(max_length=16, choices=StrategyName.choices, default=StrategyName.FEDAVG)
    strategy_params = models.JSONField(default=dict, blank=True)
    min_sites = models.PositiveSmallIntegerField(default=1)
    round_timeout_seconds = models.PositiveIntegerField(default=600)
    hub_defaults = models.JSONField(
        default=dict, blank=True,
        help_text="What the hub filled in and why: {field: {value, reason}} (finetuning.defaults)",
    )  # fmt: skip
    # The task's privacy policy, copied at approval: later edits of the task do not change a run.
    privacy_unit = models.CharField(max_length=8, blank=True, help_text="record, site or none (no DP)")
    example_clip_norm = models.FloatField(null=True, blank=True, help_text="record: per-row gradient bound C")
    dp_sample_rate = models.FloatField(null=True, blank=True, help_text="record: Poisson sampling rate q")
    dp_steps_per_round = models.PositiveIntegerField(null=True, blank=True, help_text="record: DP-SGD steps")
    dp_distributed = models.BooleanField(
        default=False,
        help_text="record, secure aggregation, one full-batch step per round: each site adds sigma/sqrt(t) "
        "and any released sum carries sigma (evaluator.privacy.distributed)",
    )
    clip_norm = models.FloatField(null=True, blank=True)
    noise_multiplier = models.FloatField(null=True, blank=True)
    dp_delta = models.FloatField(null=True, blank=True)
    epsilon_cap = models.FloatField(null=True, blank=True)
    secure_aggregation = models.BooleanField(default=True)
    validation_holdout = models.BooleanField(
        default=True, help_text="Sites hold out 20 % of their train rows for a validation curve (owner's choice)"
    )
    example_weighting = models.BooleanField(
        default=True, help_text="FedAvg weights each site by its training rows (else equal weights)"
    )
    example_cap = models.PositiveIntegerField(
        null=True, blank=True, help_text="Largest site's training rows (round 0): bounds n_k and scales n_k/cap"
    )
    robust_rule = models.CharField(max_length=16, choices=RobustRule.choices, blank=True)
    quantization_bits = models.PositiveSmallIntegerField(null=True, blank=True)
    threshold = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Shamir t of n")
    # Progress.
    status = models.CharField(
        max_length=16, choices=RunStatus.choices, default=RunStatus.REQUESTED, db_index=True
    )
    status_reason = models.CharField(max_length=64, blank=True)
    current_round = models.PositiveIntegerField(default=0)
    attempt = models.PositiveSmallIntegerField(default=0, help_text="0, or 1 when the round is being retried")
    phase = models.CharField(max_length=16, choices=Phase.choices, blank=True)
    phase_started_at = models.DateTimeField(null=True, blank=True, db_index=True)
    phase_data = models.JSONField(default=dict, blank=True, help_text="e.g. the unmask request of the round")
    layout = models.JSONField(null=True, blank=True, help_text="[[name, shape, dtype], ...] sorted by name")
    offset = models.FileField(upload_to=_run_file, null=True, blank=True, max_length=255)
    strategy_state = models.FileField(upload_to=_run_file, null=True, blank=True, max_length=255)
    privacy_ledger = models.JSONField(default=dict, blank=True)
    epsilon_spent = models.FloatField(null=True, blank=True)
    rounds_completed = models.PositiveIntegerField(default=0)
    failed_rounds = models.PositiveSmallIntegerField(default=0)
    result = models.ForeignKey(
        "submissions.Submission",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="produced_by_runs",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"fine-tuning run {self.id} of {self.parent_id} ({self.status})"

    @property
    def n_participants(self) -> int:
        return self.participants.count()

    @property
    def privacy(self):
        """The guarantee this run gives (``finetuning.privacy``): pages and the API show it."""
        cached = getattr(self, "_privacy_summary", None)
        if cached is None:
            from marketplace.finetuning.privacy import run_privacy_summary

            cached = self._privacy_summary = run_privacy_summary(self)
        return cached


class Participant(models.Model):
    """One site of a run; ``number`` (1..n) is its id in secure aggregation."""

    run = models.ForeignKey(FineTuningRun, on_delete=models.CASCADE, related_name="participants")
    site = models.ForeignKey("sites.Site", on_delete=models.PROTECT, related_name="finetuning_participations")
    number = models.PositiveSmallIntegerField()
    job = models.OneToOneField("jobs.Job", on_delete=models.PROTECT, related_name="fl_participant")

    class Meta:
        ordering = ["run_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "site"], name="one_participation_per_site"),
            models.UniqueConstraint(fields=["run", "number"], name="unique_participant_number"),
        ]

    def __str__(self) -> str:
        return f"participant {self.number} of run {self.run_id}"


class RoundStatus(models.TextChoices):
    AGGREGATED = "aggregated", "Aggregated"
    FAILED = "failed", "Failed"


class RoundRecord(models.Model):
    """What one attempt of one round produced: aggregates only, never an individual update."""

    run = models.ForeignKey(FineTuningRun, on_delete=models.CASCADE, related_name="round_records")
    round = models.PositiveIntegerField()
    attempt = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=RoundStatus.choices)
    failure_reason = models.CharField(max_length=64, blank=True)
    n_contributors = models.PositiveSmallIntegerField(default=0)
    train_loss = models.FloatField(null=True, blank=True, help_text="Mean over sites, weighted by examples")
    validation = models.JSONField(default=dict, blank=True, help_text="Weighted by validation rows")
    per_site = models.JSONField(default=list, blank=True, help_text="Each site's released round metrics")
    epsilon = models.FloatField(null=True, blank=True, help_text="Epsilon spent after this round")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    class Meta:
        ordering = ["run_id", "round", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["run", "round", "attempt"], name="one_record_per_round_attempt"),
        ]

    def __str__(self) -> str:
        return f"round {self.round}.{self.attempt} of run {self.run_id} ({self.status})"


class MessageKind(models.TextChoices):
    LAYOUT = "layout", "Layout"
    KEYS = "keys", "Public keys"
    SHARES = "shares", "Encrypted share bundles"
    MASKED = "masked", "Masked update"
    UNMASK = "unmask", "Revealed shares"
    UPDATE = "update", "Noised update (no secure aggregation)"


class ProtocolMessage(models.Model):
    """One site's post in the round in progress. Deleted once the round is aggregated or fails."""

    run = models.ForeignKey(FineTuningRun, on_delete=models.CASCADE, related_name="messages")
    round = models.PositiveIntegerField()
    attempt = models.PositiveSmallIntegerField()
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="messages")
    kind = models.CharField(max_length=16, choices=MessageKind.choices)
    payload = models.JSONField(default=dict)
    vector = models.BinaryField(null=True, blank=True)
    body_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "round", "attempt", "participant", "kind"], name="one_message_per_phase"
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.kind} from {self.participant_id} (run {self.run_id}, round {self.round}.{self.attempt})"
        )
