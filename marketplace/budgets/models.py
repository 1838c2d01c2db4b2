from django.db import models


class Split(models.TextChoices):
    PUBLIC = "public", "Public split"
    PRIVATE = "private", "Private split"


class PrivacyBudget(models.Model):
    """rho spent on one split of a task's rows: by one vendor organization, or (vendor=None) by
    all vendors together. Reserved with a conditional UPDATE (`rho_spent <= cap - rho`), so
    concurrent reservations can never pass the cap on any database."""

    task = models.ForeignKey("catalog.Task", on_delete=models.CASCADE, related_name="privacy_budgets")
    vendor = models.ForeignKey(
        "accounts.Organization", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    split = models.CharField(max_length=16, choices=Split.choices)
    rho_spent = models.FloatField(default=0.0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["task", "vendor", "split"], name="one_budget_per_vendor_and_split"
            ),
            models.UniqueConstraint(
                fields=["task", "split"],
                condition=models.Q(vendor__isnull=True),
                name="one_task_budget_per_split",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.vendor or 'all vendors'} on {self.task} ({self.split}): rho {self.rho_spent}"


class PrivacyCharge(models.Model):
    """One reservation of a submission's release cost on one split; refunded at most once."""

    task = models.ForeignKey("catalog.Task", on_delete=models.CASCADE, related_name="+")
    vendor = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="+")
    submission = models.ForeignKey(
        "submissions.Submission", on_delete=models.CASCADE, related_name="privacy_charges"
    )
    split = models.CharField(max_length=16, choices=Split.choices)
    rho = models.FloatField()
    epsilon = models.FloatField()
    delta = models.FloatField()
    refunded = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["submission", "split"], name="one_charge_per_split")]

    def __str__(self) -> str:
        return f"rho {self.rho} ({self.split}) for submission {self.submission_id}"
