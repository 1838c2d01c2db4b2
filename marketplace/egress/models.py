from django.db import models


class EgressKind(models.TextChoices):
    METRICS = "metrics", "Metrics"
    FAILURE = "failure", "Failure reason"
    UPDATE = "update", "Fine-tuning update"
    REVEAL = "reveal", "Private reveal"


class EgressRecord(models.Model):
    """The hub's mirror of one entry of a site's egress ledger: what left the site, for whom.

    The site's own ledger is the record of truth; the hub keeps the mirror so the owner can
    read and export it in one place. Append-only.
    """

    site = models.ForeignKey("sites.Site", on_delete=models.PROTECT, related_name="egress_records")
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="egress_records")
    task = models.ForeignKey("catalog.Task", on_delete=models.PROTECT, related_name="egress_records")
    vendor = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="egress_records")
    kind = models.CharField(max_length=16, choices=EgressKind.choices)
    bytes = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    # The release's privacy cost, as in the site's ledger: rho (zCDP) and its (epsilon, delta).
    rho = models.FloatField(null=True, blank=True, help_text="zCDP cost of the release")
    epsilon = models.FloatField(null=True, blank=True, help_text="Differential-privacy budget spent")
    delta = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["site", "sha256", "job"], name="one_record_per_release")]

    def __str__(self) -> str:
        return f"{self.kind} from {self.site} ({self.bytes} B)"
