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

    class Meta:
        ordering = ["organization_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="unique_site_name_per_org"),
        ]

    def __str__(self) -> str:
        return f"{self.organization} / {self.name}"

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
