from django.db.models import QuerySet

from marketplace.notifications.models import Event, NotificationPreference, WebhookDelivery, WebhookEndpoint


def email_events_of(*, user) -> list[str]:
    """The events this person gets e-mail for (all of them unless turned off)."""
    off = set(NotificationPreference.objects.filter(user=user, email=False).values_list("event", flat=True))
    return [e for e in Event.values if e not in off]


def webhooks_of(*, organization) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(organization=organization)


def recent_deliveries_of(*, organization, limit: int = 20) -> list[WebhookDelivery]:
    return list(
        WebhookDelivery.objects.filter(endpoint__organization=organization).select_related("endpoint")[:limit]
    )
