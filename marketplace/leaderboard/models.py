from django.db import models


class LeaderboardEntry(models.Model):
    """A submission's score on a task: metrics of the sites' pooled (summed) noised statistics."""

    task = models.ForeignKey("catalog.Task", on_delete=models.CASCADE, related_name="leaderboard_entries")
    submission = models.OneToOneField(
        "submissions.Submission", on_delete=models.CASCADE, related_name="leaderboard_entry"
    )
    metrics = models.JSONField()
    per_site = models.JSONField(default=list)
    ladder_improved = models.BooleanField(null=True, blank=True, help_text="Ladder mode: did this move the best?")
    reveal_approved = models.BooleanField(
        default=False, help_text="Chosen at close, its private budget reserved: the sites may reveal it"
    )
    private_metrics = models.JSONField(null=True, blank=True, help_text="Revealed after the task closes")
    private_n_rows = models.PositiveIntegerField(null=True, blank=True)
    n_rows = models.PositiveIntegerField()
    n_sites = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.submission} on {self.task}"
