"""Who hears about what: e-mail preferences per person, signed webhooks per organization."""

from django.conf import settings
from django.db import models


class Event(models.TextChoices):
    RESULTS_RELEASED = "submission.results_released", "My submission's results are released"
    AWAITING_APPROVAL = "submission.awaiting_approval", "A submission awaits my approval"
    SITE_STUCK = "site.stuck", "One of my sites stopped taking jobs"
    TASK_CLOSING = "task.closing", "A task I take part in closes soon or has closed"


class NotificationPreference(models.Model):
    """A person's choice for one event; no row means e-mail is on (the default)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences")
    event = models.CharField(max_length=48, choices=Event.choices)
    email = models.BooleanField(default=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "event"], name="unique_notification_preference")]

    def __str__(self) -> str:
        return f"{self.user} {self.event}: {'e-mail' if self.email else 'off'}"


class WebhookEndpoint(models.Model):
    """An organization's receiver. The secret signs every delivery (HMAC-SHA256); it is kept as is
    because signing needs it, shown once to the admin who creates it, never in any listing."""

    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=64)
    events = models.JSONField(default=list)
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.url} ({self.organization})"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=48, choices=Event.choices)
    body = models.TextField()  # the exact JSON bytes sent (and signed) on every attempt
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.event} to {self.endpoint_id}: {self.status}"


class Notice(models.Model):
    """One row per thing announced (``key``: event and object), so a sweep run twice, or by two
    workers at once, announces it once."""

    key = models.CharField(max_length=120, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key
