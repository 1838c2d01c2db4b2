import secrets

from django.conf import settings
from django.db import models

from marketplace.catalog.metric_catalog import metric_direction


class TaskType(models.TextChoices):
    BINARY_CLASSIFICATION = "binary_classification", "Binary classification"
    MULTICLASS_CLASSIFICATION = "multiclass_classification", "Multiclass classification"
    REGRESSION = "regression", "Regression"


class TaskStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class Visibility(models.TextChoices):
    PUBLIC = "public", "Public"
    INVITE_ONLY = "invite_only", "Invite only"


class LeaderboardMode(models.TextChoices):
    PLAIN = "plain", "Plain (rounded scores)"
    LADDER = "ladder", "Ladder"


# The default sandbox timeout (300 s) plus a minute for the queue: a model cannot move the time its
# result shows by how long it runs, since the sandbox is killed first (docs/disclosure.md).
DEFAULT_RELEASE_DELAY_SECONDS = 360


def _new_split_seed() -> int:
    return secrets.randbelow(2**31)


def _default_limits() -> dict:
    return {"memory_mb": 1024, "cpus": 1.0, "timeout_seconds": 300, "max_output_mb": 64}


class Task(models.Model):
    """A private benchmark: metadata and policy only; its data never leaves the owner's sites."""

    organization = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="tasks")
    title = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    task_type = models.CharField(max_length=32, choices=TaskType.choices)
    input_spec = models.JSONField(help_text='e.g. {"n_features": 30, "dtype": "float32", "n_classes": 2}')
    metrics = models.JSONField(help_text='e.g. [{"name": "roc_auc", "decimals": 4}]')
    primary_metric = models.CharField(max_length=32)
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PUBLIC)
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.DRAFT, db_index=True)
    opens_at = models.DateTimeField(null=True, blank=True)
    closes_at = models.DateTimeField(null=True, blank=True)
    # Submission quotas per vendor organization.
    quota_per_day = models.PositiveIntegerField(default=5)
    quota_total = models.PositiveIntegerField(null=True, blank=True)
    resource_limits = models.JSONField(default=_default_limits)
    # Disclosure policy.
    show_per_site = models.BooleanField(default=False)
    min_test_rows = models.PositiveIntegerField(default=50)
    public_split_fraction = models.FloatField(default=1.0)
    split_seed = models.PositiveIntegerField(
        default=_new_split_seed, help_text="Seeds every site's public/private split of its test rows"
    )
    final_submissions = models.PositiveSmallIntegerField(
        default=2, help_text="How many submissions a vendor nominates for the private leaderboard"
    )
    leaderboard_mode = models.CharField(max_length=16, choices=LeaderboardMode.choices, default=LeaderboardMode.PLAIN)
    requires_job_approval = models.BooleanField(default=False)
    requires_release_approval = models.BooleanField(
        default=False, help_text="Results wait at the site until the owner approves their release"
    )
    failed_jobs_consume_quota = models.BooleanField(default=True)
    # Differential privacy of evaluation releases (docs/disclosure.md): each release costs
    # rho_for_epsilon(dp_epsilon_per_release, dp_delta), paid per (vendor, split) and per split.
    dp_epsilon_per_release = models.FloatField(default=1.0, help_text="Epsilon of one submission's release")
    dp_delta = models.FloatField(default=1e-6, help_text="Delta of every guarantee on the task")
    dp_vendor_epsilon = models.FloatField(default=10.0, help_text="What one vendor organization may spend")
    dp_task_epsilon = models.FloatField(default=20.0, help_text="What all vendors together may spend")
    release_delay_seconds = models.PositiveIntegerField(
        default=DEFAULT_RELEASE_DELAY_SECONDS,
        help_text="Results become visible at upload + a multiple of this; longer than the sandbox timeout, "
        "a model cannot move its release by how long it runs",
    )
    ladder_threshold = models.FloatField(
        default=0.01, help_text="Ladder: an entry improves only if it beats the vendor's best by this"
    )
    fine_tuning_allowed = models.BooleanField(default=False)
    rules = models.TextField(
        blank=True, max_length=20000,
        help_text="The task's rules, in the owner's words; a vendor accepts them before its first upload",
    )  # fmt: skip
    # Federated fine-tuning privacy policy (docs/federated-protocol.md), copied into a run at approval.
    # Private by default: record-level DP-SGD at every site, sigma calibrated to the epsilon cap 8 (delta 1e-5);
    # why these values: docs/federated-protocol.md and BENCHMARKS.md.
    fl_privacy_unit = models.CharField(
        max_length=8, default="record",
        help_text="record: DP-SGD at each site protects every training row (default); site: noise on the "
        "aggregate protects a whole site; none: no DP guarantee (the owner's explicit opt-out)",
    )  # fmt: skip
    fl_example_clip_norm = models.FloatField(default=1.0, help_text="record: L2 bound of each row's gradient")
    fl_clip_norm = models.FloatField(
        default=1.0, help_text="L2 bound of each site's whole update (site unit: the sensitivity; record: a bound)"
    )
    fl_noise_multiplier = models.FloatField(
        null=True, blank=True, default=None,
        help_text="record: sigma of each DP-SGD step; site: the aggregate carries noise z * clip; empty: "
        "calibrated to the epsilon cap over a run's planned rounds (marketplace.finetuning.defaults)",
    )  # fmt: skip
    fl_dp_delta = models.FloatField(default=1e-5)
    fl_epsilon_cap = models.FloatField(null=True, blank=True, default=8.0, help_text="A run stops before passing it")
    fl_secure_aggregation = models.BooleanField(default=True, help_text="Needs at least 3 sites")
    fl_robust_rule = models.CharField(
        max_length=16, default="mean", help_text="mean, median, trimmed_mean or norm_bound (no secure aggregation)"
    )
    fl_quantization_bits = models.PositiveSmallIntegerField(default=20)
    sample_file = models.FileField(upload_to="samples/", null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title

    @property
    def metric_specs(self) -> list[dict]:
        """The task's metrics with their direction filled in from the catalog."""
        return [
            {"name": m["name"], "direction": metric_direction(m["name"]), "decimals": m["decimals"]}
            for m in self.metrics
        ]

    @property
    def n_classes(self) -> int | None:
        return self.input_spec.get("n_classes")


class DataShard(models.Model):
    """What a site reports about its part of a task's data: metadata only, never rows."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="shards")
    site = models.ForeignKey("sites.Site", on_delete=models.CASCADE, related_name="shards")
    row_count = models.PositiveIntegerField()
    fingerprint = models.CharField(max_length=64)
    split_sizes = models.JSONField(default=dict)
    registered_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "site"], name="unique_shard_per_site")]

    def __str__(self) -> str:
        return f"{self.task} @ {self.site} ({self.row_count} rows)"


class AccessEventKind(models.TextChoices):
    REQUESTED = "requested", "Requested"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class AccessEvent(models.Model):
    """Append-only log of a vendor's access to an invite-only task; the latest event decides."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="access_events")
    vendor = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="access_events")
    kind = models.CharField(max_length=16, choices=AccessEventKind.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    note = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["task", "vendor", "-id"])]

    def __str__(self) -> str:
        return f"{self.vendor} {self.kind} on {self.task}"
