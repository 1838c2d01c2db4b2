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
    on_public_board = models.BooleanField(
        default=False, help_text="Ranked on the stored public board (leaderboard.standings' bookkeeping)"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        # The standings' freshness check reads the task's latest entry change from this index.
        indexes = [
            models.Index(fields=["task", "updated_at"], name="leaderboard_task_updated"),
            models.Index(fields=["task", "on_public_board"], name="leaderboard_task_public"),
        ]

    def __str__(self) -> str:
        return f"{self.submission} on {self.task}"


class Audience(models.TextChoices):
    """Who reads a board: the task's owner sees every entry at once, everyone else an entry from
    its release time (Submission.results_visible_at) on."""

    OWNER = "owner", "Owner"
    PUBLIC = "public", "Everyone else"


class LeaderboardStanding(models.Model):
    """A task's public-split board in rank order for one audience, precomputed whenever a score
    arrives, changes or passes its release time (leaderboard.standings), so that a read pages
    through stored ranks instead of ranking every entry.

    `orders[view][metric]` lists the entry ids in rank order (TIE_RULE applied); an entry's rank
    is its position + 1. `version` moves whenever what this audience sees may have changed: it is
    the ETag of the board's answers and part of their cache key."""

    task = models.ForeignKey("catalog.Task", on_delete=models.CASCADE, related_name="leaderboard_standings")
    audience = models.CharField(max_length=8, choices=Audience.choices)
    orders = models.JSONField(default=dict)
    version = models.PositiveIntegerField(default=0)
    digest = models.CharField(max_length=64, blank=True, help_text="Of what this audience sees; a new one moves version")
    changed_at = models.DateTimeField(null=True, blank=True, help_text="When version last moved (Last-Modified)")
    computed_at = models.DateTimeField(null=True, blank=True)
    next_release_at = models.DateTimeField(
        null=True, blank=True, help_text="Public: the next entry's release time; the ranks are stale from then"
    )
    task_updated_at = models.DateTimeField(null=True, blank=True, help_text="The task settings the ranks follow")
    entries_updated_at = models.DateTimeField(null=True, blank=True, help_text="The latest entry change seen")
    released_unlisted = models.PositiveIntegerField(
        default=0, help_text="Public: released entries not marked on_public_board at the refresh"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "audience"], name="leaderboard_standing_unique")]

    def __str__(self) -> str:
        return f"{self.task} ({self.audience}, v{self.version})"
