from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class Site(models.Model):
    """A place inside a data owner's network where an agent evaluates models on local data."""

    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="sites")
    name = models.CharField(max_length=120)
    created_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_agent_id = models.CharField(max_length=64, blank=True)
    capabilities = models.JSONField(default=dict, blank=True)
    # What the agent says about itself at each heartbeat: "ok", or why it cannot work now (it
    # claims nothing meanwhile), e.g. "disk_full" with the free space in the detail.
    health_status = models.CharField(max_length=32, default="ok", blank=True)
    health_detail = models.CharField(max_length=300, blank=True)
    last_claim_at = models.DateTimeField(null=True, blank=True)
    # Set by the reconciler while jobs wait at this site and no agent has claimed for a while.
    stuck_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["organization_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="unique_site_name_per_org"),
        ]

    def __str__(self) -> str:
        return f"{self.organization} / {self.name}"

    @property
    def problem(self) -> str:
        """What the owner should know about this site's agent now, or ""."""
        if self.health_status and self.health_status != "ok" and self.is_online:
            label = self.health_status.replace("_", " ")
            return f"cannot work: {label}" + (f" ({self.health_detail})" if self.health_detail else "")
        if self.stuck_since is not None:
            return f"stuck: jobs wait and no agent has claimed one since {self.stuck_since:%Y-%m-%d %H:%M} UTC"
        return ""

    @property
    def is_online(self) -> bool:
        if self.last_heartbeat_at is None:
            return False
        window = timedelta(seconds=settings.VAULTBENCH_SITE_ONLINE_SECONDS)
        return timezone.now() - self.last_heartbeat_at <= window


class SiteToken(models.Model):
    """A site agent's credential; scoped to one site, stored as a sha256 hash, revocable."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="tokens")
    key_hash = models.CharField(max_length=64, unique=True)
    display_prefix = models.CharField(max_length=12)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.display_prefix}… for {self.site}"
