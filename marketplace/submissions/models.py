import uuid

from django.conf import settings
from django.db import models


class ArtifactFormat(models.TextChoices):
    TORCHSCRIPT = "torchscript", "TorchScript"
    SKLEARN = "sklearn", "scikit-learn (joblib)"
    ONNX = "onnx", "ONNX"
    PYTHON_PACKAGE = "python_package", "Python model package"


class SubmissionStatus(models.TextChoices):
    CHECKING = "checking", "Checking"
    REJECTED = "rejected", "Rejected"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    EVALUATING = "evaluating", "Evaluating"
    SCORED = "scored", "Scored"
    FAILED = "failed", "Failed"


def artifact_path(instance: "Submission", filename: str) -> str:
    # A random folder per upload: names never collide and never reveal anything.
    return f"artifacts/{uuid.uuid4().hex}/artifact"


def weights_offset_path(instance: "Submission", filename: str) -> str:
    return f"artifacts/{uuid.uuid4().hex}/weights_offset.safetensors"


class Submission(models.Model):
    vendor = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="submissions")
    task = models.ForeignKey("catalog.Task", on_delete=models.PROTECT, related_name="submissions")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    artifact = models.FileField(upload_to=artifact_path, max_length=255)
    artifact_format = models.CharField(max_length=32, choices=ArtifactFormat.choices)
    original_filename = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=32, choices=SubmissionStatus.choices, default=SubmissionStatus.CHECKING, db_index=True)
    status_reason = models.CharField(max_length=64, blank=True)
    is_baseline = models.BooleanField(default=False)
    is_final = models.BooleanField(default=False, help_text="Nominated for the private leaderboard")
    quota_refunded = models.BooleanField(default=False)
    # A fine-tuned submission: the parent's artifact plus an offset added to its weights on load.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="fine_tuned_children"
    )
    is_fine_tuned = models.BooleanField(default=False)
    weights_offset = models.FileField(upload_to=weights_offset_path, null=True, blank=True, max_length=255)
    weights_offset_sha256 = models.CharField(max_length=64, blank=True)
    # When a vendor may see the outcome: set once the submission is final, padded to a multiple of
    # the task's release_delay_seconds after created_at (the run time is not observable).
    results_visible_at = models.DateTimeField(null=True, blank=True)
    # The data owner's reason for rejecting the submission's job(s), written for the vendor; shown
    # to it with the outcome (visibility.py), never earlier.
    rejection_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.vendor})"


class QuotaCounter(models.Model):
    """Submissions a vendor has used on a task, per UTC day (and one row with day=None: the total).

    Incremented with a conditional UPDATE (`used < limit`), so concurrent uploads can never
    overrun the quota on any database.
    """

    task = models.ForeignKey("catalog.Task", on_delete=models.CASCADE, related_name="+")
    vendor = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="+")
    day = models.DateField(null=True, blank=True)
    used = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "vendor", "day"], name="one_quota_counter_per_day"),
            models.UniqueConstraint(
                fields=["task", "vendor"], condition=models.Q(day__isnull=True), name="one_total_quota_counter"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.vendor} on {self.task}: {self.used} ({self.day or 'total'})"


class RulesAcceptance(models.Model):
    """A vendor organization accepted a task's rules (as they read when it did): needed before its
    first upload to a task that has rules; rules the owner changes later are accepted again."""

    task = models.ForeignKey("catalog.Task", on_delete=models.CASCADE, related_name="+")
    vendor = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="+")
    accepted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    rules_sha256 = models.CharField(max_length=64)
    accepted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "vendor", "rules_sha256"], name="one_acceptance_per_rules_text")
        ]

    def __str__(self) -> str:
        return f"{self.vendor} accepted the rules of {self.task}"
