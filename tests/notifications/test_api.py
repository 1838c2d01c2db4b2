"""Notification settings over the API: e-mail preferences, webhooks (admins only, secret once)."""

from marketplace.accounts.models import MemberRole, Membership
from marketplace.notifications.models import WebhookEndpoint
from tests.hub.helpers import error_code


def test_a_person_reads_and_sets_their_email_preferences(vendor):
    assert len(vendor.client.get("/api/v1/me/notifications").json()["email_events"]) == 4  # all on by default
    response = vendor.client.put("/api/v1/me/notifications", {"email_events": ["task.closing"]})
    assert response.status_code == 200 and response.json() == {"email_events": ["task.closing"]}
    assert vendor.client.get("/api/v1/me/notifications").json() == {"email_events": ["task.closing"]}
    bad = vendor.client.put("/api/v1/me/notifications", {"email_events": ["everything"]})
    assert bad.status_code == 400


def test_an_admin_adds_a_webhook_sees_its_secret_once_and_deletes_it(owner, settings):
    settings.VAULTBENCH_WEBHOOK_ALLOW_PRIVATE = True
    path = f"/api/v1/organizations/{owner.organization.id}/webhooks"
    created = owner.client.post(path, {"url": "http://127.0.0.1:9/hook", "events": ["site.stuck"]})
    assert created.status_code == 201, created.content
    assert created.json()["secret"].startswith("whsec_")
    listed = owner.client.get(path).json()
    assert [w["url"] for w in listed] == ["http://127.0.0.1:9/hook"] and "secret" not in listed[0]
    deleted = owner.client.post(f"{path}/{created.json()['id']}/delete")
    assert deleted.status_code == 204 and not WebhookEndpoint.objects.exists()


def test_webhooks_are_for_the_organizations_admins_only(owner, outsider, other_owner, settings):
    settings.VAULTBENCH_WEBHOOK_ALLOW_PRIVATE = True
    Membership.objects.create(user=outsider.user, organization=owner.organization, role=MemberRole.MEMBER)
    body = {"url": "http://127.0.0.1:9/hook", "events": ["site.stuck"]}
    assert outsider.client.post(f"/api/v1/organizations/{owner.organization.id}/webhooks", body).status_code == 403
    assert other_owner.client.post(f"/api/v1/organizations/{owner.organization.id}/webhooks", body).status_code == 404
    assert other_owner.client.get(f"/api/v1/organizations/{owner.organization.id}/webhooks").status_code == 404
    assert not WebhookEndpoint.objects.exists()


def test_a_private_webhook_target_is_refused_over_the_api(owner, settings):
    settings.VAULTBENCH_WEBHOOK_ALLOW_PRIVATE = False
    response = owner.client.post(
        f"/api/v1/organizations/{owner.organization.id}/webhooks",
        {"url": "http://169.254.169.254/latest/meta-data/", "events": ["site.stuck"]},
    )
    assert response.status_code == 400 and error_code(response) == "webhook_target_refused"
    assert not WebhookEndpoint.objects.exists()
