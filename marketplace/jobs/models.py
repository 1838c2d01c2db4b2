from django.db import models


class JobKind(models.TextChoices):
    EVALUATE = "evaluate", "Evaluate"
    TRAIN = "train", "Train"


class JobStatus(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    HELD = "held", "Held at the site for release approval"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected by the owner"


TERMINAL_STATUSES = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.REJECTED}


class FailureReason(models.TextChoices):
    """The only failure information that leaves a site: coarse, from a fixed list."""

    TIMEOUT = "timeout", "Timed out"
    OUT_OF_MEMORY = "out_of_memory", "Out of memory"
    INVALID_OUTPUT = "invalid_output", "Invalid output"
    CRASHED = "crashed", "Crashed"
    ARTIFACT_MISMATCH = "artifact_mismatch", "Artifact checksum mismatch"
    INVALID_ARTIFACT = "invalid_artifact", "Invalid artifact"
    DATA_UNAVAILABLE = "data_unavailable", "Data unavailable at the site"
    POLICY_VIOLATION = "policy_violation", "Refused by the site's policy"
    INTERNAL_ERROR = "internal_error", "Internal error at the site"
    AGENT_LOST = "agent_lost", "The site agent stopped responding"
    WITHHELD = "withheld", "The data owner did not release the result"


# Every reason is either retryable or final, never both:
# - retryable: the site's own trouble (its engine, runner image, disk or data, an agent that
#   went away), not the model's doing; the job goes back to the queue while attempts remain and
#   any agent of the site, the same one included, takes the new attempt;
# - final: deterministic, a second attempt would end the same way (the vendor's artifact or
#   model, the site's policy, the owner's decision): the job ends at once with its reason.
RETRYABLE_REASONS = frozenset(
    {FailureReason.INTERNAL_ERROR, FailureReason.DATA_UNAVAILABLE, FailureReason.AGENT_LOST}
)
FINAL_REASONS = frozenset(FailureReason) - RETRYABLE_REASONS
AGENT_REPORTABLE_REASONS = [r for r in FailureReason.values if r != FailureReason.AGENT_LOST]
# What an evaluation may fail with: only what happens before the model sees data (or the owner's
# refusal). A failure after it is released as the statistics of a fallback prediction instead,
# so the model cannot choose what the hub learns (docs/disclosure.md).
PRE_DATA_REASONS = {
    FailureReason.POLICY_VIOLATION,
    FailureReason.ARTIFACT_MISMATCH,
    FailureReason.INVALID_ARTIFACT,
    FailureReason.DATA_UNAVAILABLE,
    FailureReason.INTERNAL_ERROR,
    FailureReason.WITHHELD,
    FailureReason.AGENT_LOST,
}


class ReleaseDecision(models.TextChoices):
    APPROVED = "approved", "Approved"
    REFUSED = "refused", "Refused"


class Job(models.Model):
    kind = models.CharField(max_length=16, choices=JobKind.choices, default=JobKind.EVALUATE)
    submission = models.ForeignKey("submissions.Submission", on_delete=models.CASCADE, related_name="jobs")
    site = models.ForeignKey("sites.Site", on_delete=models.PROTECT, related_name="jobs")
    status = models.CharField(max_length=32, choices=JobStatus.choices, db_index=True)
    lease_holder = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    # A fresh random token per claim: what an agent remembers as posted is (job, attempt token),
    # so a requeued job is taken again by the same agent, and job ids a hub restored from a backup
    # issues again are new work, not "already posted". Posts carry it; a superseded one is a 409.
    attempt_token = models.CharField(max_length=32, blank=True)
    # A job requeued after a retryable site failure waits until then before it is claimed again,
    # so a site's trouble of a few seconds (data being replaced, an engine restarting) does not
    # spend every attempt at once. Null: claimable now.
    not_before = models.DateTimeField(null=True, blank=True)
    failure_reason = models.CharField(max_length=32, choices=FailureReason.choices, blank=True)
    release_decision = models.CharField(max_length=16, choices=ReleaseDecision.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # One evaluation per (submission, site); a submission may be fine-tuned by several runs,
            # each with its own train job per site.
            models.UniqueConstraint(
                fields=["submission", "site", "kind"],
                condition=models.Q(kind="evaluate"),
                name="one_job_per_site_and_kind",
            ),
        ]
        indexes = [models.Index(fields=["site", "status", "id"])]

    def __str__(self) -> str:
        return f"job {self.id} ({self.kind}, {self.status}) at {self.site}"


class Result(models.Model):
    """What one site released for one job: its noised statistics (and, after close, those of its
    private split), the metrics the hub computed from them, and the ledger receipts."""

    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="result")
    statistics = models.JSONField(default=dict, help_text="Public-split noised sufficient statistics, as released by the site")
    metrics = models.JSONField(default=dict, help_text="This site's metrics, computed by the hub from its statistics")
    n_rows = models.PositiveIntegerField()
    ledger_sha256 = models.CharField(max_length=64)
    ledger_bytes = models.PositiveIntegerField()
    private_statistics = models.JSONField(null=True, blank=True, help_text="Released by the site at close")
    private_metrics = models.JSONField(null=True, blank=True)
    private_n_rows = models.PositiveIntegerField(null=True, blank=True)
    private_ledger_sha256 = models.CharField(max_length=64, blank=True)
    # What the site ran the job with (its receipt): scores from different runner versions can be
    # told apart, and a data change at the site shows as another fingerprint.
    runner_image = models.CharField(max_length=80, blank=True, help_text="The runner image's id (sha256:...)")
    data_fingerprint = models.CharField(max_length=64, blank=True, help_text="Keyed fingerprint of the data checked")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"result of job {self.job_id}"
