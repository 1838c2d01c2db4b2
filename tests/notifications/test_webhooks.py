"""Signed webhooks delivered over real HTTP to a local receiver: signature, retries with backoff,
giving up, and the guard against private targets."""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from marketplace.core.errors import DomainError
from marketplace.notifications import webhooks
from marketplace.notifications.models import DeliveryStatus, Event, WebhookDelivery
from marketplace.notifications.services import notify, webhook_deliver, webhook_endpoint_create
from marketplace.notifications.tasks import notifications_sweep_task


def _endpoint(owner, url, events=(Event.AWAITING_APPROVAL,)):
    return webhook_endpoint_create(organization=owner.organization, actor=owner.user, url=url, events=list(events))


def _announce(owner, key="k1", event=Event.AWAITING_APPROVAL):
    return notify(
        event=event, key=key, organization=owner.organization, users=[owner.user],
        subject="s", text="t", data={"submission": 7},
    )  # fmt: skip


def test_a_delivery_is_signed_with_the_endpoints_secret_and_a_timestamp(
    owner, receiver, webhooks_on_loopback, django_capture_on_commit_callbacks
):
    endpoint, secret = _endpoint(owner, receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        assert _announce(owner) is True
    (request,) = receiver.requests
    assert request.path == "/hooks/vaultbench"
    timestamp = int(request.headers["x-vaultbench-timestamp"])
    assert abs(time.time() - timestamp) < 60
    assert webhooks.verify(secret, timestamp, request.body, request.headers["x-vaultbench-signature"])
    assert not webhooks.verify("whsec_wrong", timestamp, request.body, request.headers["x-vaultbench-signature"])
    assert not webhooks.verify(secret, timestamp, request.body + b" ", request.headers["x-vaultbench-signature"])
    assert not webhooks.verify(secret, timestamp, request.body, request.headers["x-vaultbench-signature"], now=timestamp + 3600)
    payload = json.loads(request.body)
    assert payload["event"] == "submission.awaiting_approval" and payload["data"] == {"submission": 7}
    assert request.headers["x-vaultbench-event"] == "submission.awaiting_approval"
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert request.headers["x-vaultbench-delivery"] == str(delivery.id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.DELIVERED, 1, 200)


def test_an_event_is_announced_once_and_only_to_subscribed_endpoints(
    owner, receiver, webhooks_on_loopback, django_capture_on_commit_callbacks
):
    _endpoint(owner, receiver.url, events=[Event.SITE_STUCK])
    with django_capture_on_commit_callbacks(execute=True):
        _announce(owner, event=Event.AWAITING_APPROVAL)
    assert receiver.requests == []
    _endpoint(owner, receiver.url, events=[Event.AWAITING_APPROVAL])
    with django_capture_on_commit_callbacks(execute=True):
        assert _announce(owner, key="k2") is True
        assert _announce(owner, key="k2") is False  # the same notice again: nothing
    assert len(receiver.requests) == 1


def test_a_failing_receiver_is_retried_with_the_same_signed_body_until_it_answers(
    owner, receiver, webhooks_on_loopback, django_capture_on_commit_callbacks
):
    receiver.answers = [500, 503]
    _, secret = _endpoint(owner, receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        _announce(owner)
    assert len(receiver.requests) == 3
    assert len({r.body for r in receiver.requests}) == 1
    for r in receiver.requests:
        assert webhooks.verify(secret, int(r.headers["x-vaultbench-timestamp"]), r.body, r.headers["x-vaultbench-signature"])
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.DELIVERED, 3, 200)


def test_a_delivery_gives_up_after_its_attempts(owner, receiver, webhooks_on_loopback, django_capture_on_commit_callbacks):
    receiver.answers = [500] * 10
    _endpoint(owner, receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        _announce(owner)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, webhooks_on_loopback.VAULTBENCH_WEBHOOK_MAX_ATTEMPTS)
    assert len(receiver.requests) == webhooks_on_loopback.VAULTBENCH_WEBHOOK_MAX_ATTEMPTS
    assert delivery.last_error == "answered HTTP 500"


def test_the_next_attempt_waits_for_its_backoff_and_the_sweep_sends_it_when_due(
    owner, receiver, webhooks_on_loopback, django_capture_on_commit_callbacks
):
    webhooks_on_loopback.VAULTBENCH_WEBHOOK_BACKOFF_SECONDS = 30
    receiver.answers = [500]
    _endpoint(owner, receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        _announce(owner)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 1)
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert 20 < wait <= 30
    assert webhook_deliver(delivery_id=delivery.id) == "skipped"  # not due: a duplicate message does nothing
    assert len(receiver.requests) == 1
    WebhookDelivery.objects.filter(id=delivery.id).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    notifications_sweep_task()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 2)
    assert len(receiver.requests) == 2


def test_redirects_are_not_followed(owner, receiver, webhooks_on_loopback, django_capture_on_commit_callbacks):
    webhooks_on_loopback.VAULTBENCH_WEBHOOK_MAX_ATTEMPTS = 1
    receiver.answers = [302]
    receiver.redirect_to = receiver.url + "/elsewhere"
    _endpoint(owner, receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        _announce(owner)
    assert [r.path for r in receiver.requests] == ["/hooks/vaultbench"]
    assert WebhookDelivery.objects.get().status == DeliveryStatus.FAILED


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8000/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://0.0.0.0/hook",
        "ftp://example.org/hook",
        "http://user:pass@example.org/hook",
    ],
)
def test_private_loopback_and_odd_targets_are_refused_by_default(owner, url, settings):
    settings.VAULTBENCH_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(DomainError):
        _endpoint(owner, url)


def test_a_target_that_turns_private_is_refused_at_delivery_without_a_request(
    owner, receiver, webhooks_on_loopback, django_capture_on_commit_callbacks
):
    _endpoint(owner, receiver.url)  # allowed when created (the setting is on) ...
    webhooks_on_loopback.VAULTBENCH_WEBHOOK_ALLOW_PRIVATE = False  # ... checked again at every attempt
    webhooks_on_loopback.VAULTBENCH_WEBHOOK_MAX_ATTEMPTS = 1
    with django_capture_on_commit_callbacks(execute=True):
        _announce(owner)
    assert receiver.requests == []
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED and "private, loopback or reserved" in delivery.last_error
