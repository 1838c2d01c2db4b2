"""Notifications: e-mail to people, signed webhooks to organizations. Everything leaves after
commit through Celery (tasks.py); a delivery is a row, so a lost message is picked up again."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from marketplace.audit.services import audit_record
from marketplace.core.errors import DomainError, NotFound
from marketplace.notifications.models import (
    DeliveryStatus,
    Event,
    Notice,
    NotificationPreference,
    WebhookDelivery,
    WebhookEndpoint,
)
from marketplace.notifications.webhooks import check_target

logger = logging.getLogger(__name__)
ERROR_CHARS = 300


def _enqueue(task, *args) -> None:
    """Called after commit: a broker outage loses no row (deliveries are swept again)."""
    try:
        task.delay(*args)
    except Exception:
        logger.exception("could not enqueue %s%r", task.name, args)


# --- e-mail -----------------------------------------------------------------------------------

def email_enqueue(*, to: Iterable[str], subject: str, body: str) -> None:
    """Send a plain-text e-mail once the current transaction commits (Django's e-mail backend)."""
    from marketplace.notifications.tasks import email_send_task

    recipients = sorted({address for address in to if address})
    if recipients:
        transaction.on_commit(lambda: _enqueue(email_send_task, recipients, subject, body))


def email_send(*, to: list[str], subject: str, body: str) -> int:
    return send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, to, fail_silently=False)


def email_wanted(*, users: Iterable, event: str) -> list[str]:
    """The addresses of these people who have not turned this event's e-mail off."""
    users = [u for u in users if u.email and u.is_active]
    off = set(
        NotificationPreference.objects.filter(user__in=users, event=event, email=False).values_list("user_id", flat=True)
    )
    return [u.email for u in users if u.id not in off]


@transaction.atomic
def notification_preferences_set(*, user, email_events: Iterable[str]) -> None:
    """E-mail on for exactly ``email_events``, off for every other event."""
    wanted = set(email_events)
    unknown = wanted - set(Event.values)
    if unknown:
        raise DomainError(f"Unknown events: {', '.join(sorted(unknown))}.", code="invalid_event")
    for event in Event.values:
        NotificationPreference.objects.update_or_create(user=user, event=event, defaults={"email": event in wanted})
    audit_record(action="notifications.preferences_set", obj=user, actor_user=user, data={"email": sorted(wanted)})


# --- webhooks ---------------------------------------------------------------------------------

def _clean_events(events: Iterable[str]) -> list[str]:
    chosen = sorted(set(events))
    if not chosen:
        raise DomainError("Choose at least one event.", code="invalid_event")
    unknown = set(chosen) - set(Event.values)
    if unknown:
        raise DomainError(f"Unknown events: {', '.join(sorted(unknown))}.", code="invalid_event")
    return chosen


@transaction.atomic
def webhook_endpoint_create(*, organization, actor, url: str, events: Iterable[str]) -> tuple[WebhookEndpoint, str]:
    """Returns the endpoint and its signing secret (shown once). The URL must resolve to a public
    address now (and is checked again at every delivery)."""
    chosen = _clean_events(events)
    check_target(url)
    if WebhookEndpoint.objects.filter(organization=organization).count() >= settings.VAULTBENCH_WEBHOOKS_PER_ORGANIZATION:
        raise DomainError("This organization has as many webhooks as it may have.", code="too_many_webhooks")
    secret = "whsec_" + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint.objects.create(
        organization=organization, url=url, secret=secret, events=chosen, created_by=actor
    )
    audit_record(
        action="webhook.created", obj=organization, actor_user=actor,
        data={"webhook": endpoint.id, "url": url, "events": chosen},
    )  # fmt: skip
    return endpoint, secret


@transaction.atomic
def webhook_endpoint_delete(*, organization, actor, endpoint_id: int) -> None:
    endpoint = WebhookEndpoint.objects.filter(organization=organization, id=endpoint_id).first()
    if endpoint is None:
        raise NotFound("Webhook not found.")
    audit_record(action="webhook.deleted", obj=organization, actor_user=actor, data={"webhook": endpoint.id, "url": endpoint.url})
    endpoint.delete()


def _backoff(attempts: int) -> timedelta:
    base = settings.VAULTBENCH_WEBHOOK_BACKOFF_SECONDS
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), 3600))


def webhook_deliver(*, delivery_id: int) -> str:
    """One attempt, safe to run twice: the attempt is claimed by a conditional update, and a
    failure schedules the next one with exponential backoff until the attempts run out."""
    from marketplace.notifications import webhooks
    from marketplace.notifications.tasks import webhook_deliver_task

    now = timezone.now()
    lease = now + timedelta(seconds=webhooks.TIMEOUT_SECONDS * 3)
    claimed = WebhookDelivery.objects.filter(
        id=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=lease)
    if claimed != 1:
        return "skipped"
    delivery = WebhookDelivery.objects.select_related("endpoint").get(id=delivery_id)
    endpoint = delivery.endpoint
    code, error = None, ""
    try:
        code = webhooks.post(
            endpoint.url, secret=endpoint.secret, event=delivery.event, delivery_id=delivery.id,
            body=delivery.body.encode(),
        )  # fmt: skip
        if not 200 <= code < 300:
            error = f"answered HTTP {code}"
    except Exception as exc:  # refused target, DNS, connection, timeout, TLS
        error = f"{type(exc).__name__}: {exc}"
    delivery.attempts += 1
    delivery.last_status_code, delivery.last_error = code, error[:ERROR_CHARS]
    fields = ["attempts", "last_status_code", "last_error", "status", "next_attempt_at", "delivered_at"]
    if not error:
        delivery.status, delivery.delivered_at = DeliveryStatus.DELIVERED, timezone.now()
    elif delivery.attempts >= settings.VAULTBENCH_WEBHOOK_MAX_ATTEMPTS:
        delivery.status = DeliveryStatus.FAILED
        logger.warning("webhook delivery %s to %s failed for good: %s", delivery.id, endpoint.url, error)
    else:
        delay = _backoff(delivery.attempts)
        delivery.next_attempt_at = timezone.now() + delay
    delivery.save(update_fields=fields)
    if delivery.status == DeliveryStatus.PENDING:
        countdown = max((delivery.next_attempt_at - timezone.now()).total_seconds(), 0)
        try:
            webhook_deliver_task.apply_async((delivery.id,), countdown=countdown)
        except Exception:
            logger.exception("could not schedule webhook delivery %s; the sweep will", delivery.id)
    return delivery.status


def webhook_deliveries_due() -> list[int]:
    """Pending deliveries whose time has come (a lost or never-sent message): for the beat sweep."""
    return list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:500]
    )


# --- announcing an event ----------------------------------------------------------------------

def notice_claim(key: str) -> bool:
    """True the first time ``key`` is claimed, False ever after (a unique row)."""
    try:
        with transaction.atomic():
            Notice.objects.create(key=key[:120])
    except IntegrityError:
        return False
    return True


@transaction.atomic
def notify(*, event: str, key: str, organization, users: Iterable, subject: str, text: str, data: dict) -> bool:
    """Announce ``event`` once per ``key``: e-mail to ``users`` who want it, a signed webhook to each
    of ``organization``'s endpoints subscribed to it. Returns False if already announced."""
    if not notice_claim(f"{event}:{key}"):
        return False
    from marketplace.notifications.tasks import webhook_deliver_task

    email_enqueue(to=email_wanted(users=users, event=event), subject=subject, body=text)
    body = json.dumps(
        {"event": event, "created_at": timezone.now().isoformat(), "organization": organization.id, "data": data},
        sort_keys=True, separators=(",", ":"),
    )  # fmt: skip
    for endpoint in WebhookEndpoint.objects.filter(organization=organization, is_active=True):
        if event not in endpoint.events:
            continue
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint, event=event, body=body, next_attempt_at=timezone.now()
        )
        transaction.on_commit(lambda d=delivery.id: _enqueue(webhook_deliver_task, d))
    return True
