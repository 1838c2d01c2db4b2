"""Sign up, log in and out, the organization page and personal API tokens."""

import re

from django.contrib.auth import get_user_model

from marketplace.accounts.models import Invitation, Membership, Organization, PersonalToken
from marketplace.core.tokens import token_hash

User = get_user_model()
GOOD = {
    "username": "nadia",
    "email": "nadia@example.org",
    "password1": "a-long-unusual-passphrase",
    "password2": "a-long-unusual-passphrase",
}


def test_sign_up_creates_the_person_and_their_organization_and_logs_in(web, db):
    client = web(None)
    response = client.post("/accounts/signup/", {**GOOD, "kind": "vendor", "organization_name": "Nadia Labs"})
    assert response.status_code == 302 and response["Location"] == "/account/"
    user = User.objects.get(username="nadia")
    organization = Organization.objects.get(name="Nadia Labs")
    assert organization.kind == "vendor"
    assert Membership.objects.get(user=user, organization=organization).role == "admin"
    assert "Nadia Labs" in client.get("/account/").content.decode()


def test_sign_up_without_an_organization_then_joins_by_accepting_an_invitation(web, owner, db):
    client = web(None)
    assert client.post("/accounts/signup/", {**GOOD, "kind": ""}).status_code == 302
    assert User.objects.get(username="nadia").email == "nadia@example.org"
    assert "You belong to no organization yet" in client.get("/account/").content.decode()
    response = web(owner).post(f"/organizations/{owner.organization.id}/", {"invitee": "nadia", "role": "member"})
    assert response.status_code == 302
    assert not Membership.objects.filter(user__username="nadia", organization=owner.organization).exists()
    page = client.get("/account/").content.decode()
    assert "Invitations for you" in page and "St. Mercy Hospitals" in page
    invitation = Invitation.objects.get(invitee__username="nadia")
    assert client.post(f"/account/invitations/{invitation.id}/accept/").status_code == 302
    assert Membership.objects.get(user__username="nadia", organization=owner.organization).role == "member"


def test_sign_up_refuses_bad_input_and_keeps_nothing(web, vendor):
    client = web(None)
    cases = [
        {**GOOD, "password2": "something-else-entirely"},
        {**GOOD, "password1": "123", "password2": "123"},
        {**GOOD, "username": "victor"},  # taken
        {**GOOD, "email": ""},  # an e-mail address is required
        {**GOOD, "email": "not-an-address"},
        {**GOOD, "kind": "vendor", "organization_name": ""},
        {**GOOD, "kind": "vendor", "organization_name": "Acme Models"},  # an existing organization
    ]
    for data in cases:
        response = client.post("/accounts/signup/", data)
        assert response.status_code == 200, data
        assert 'class="errorlist' in response.content.decode(), data
    assert not User.objects.filter(username="nadia").exists()


def test_log_in_and_log_out(web, vendor):
    client = web(None)
    response = client.post("/accounts/login/", {"username": "victor", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert "victor" in client.get("/").content.decode()
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/account/").status_code == 302


def test_organization_page_lists_members_and_only_admins_invite_or_change_roles(web, owner, outsider):
    Membership.objects.create(user=outsider.user, organization=owner.organization, role="member")
    page = web(owner).get(f"/organizations/{owner.organization.id}/").content.decode()
    assert "olivia" in page and "otto" in page and "Invite a member" in page and "Change role" in page
    page = web(outsider).get(f"/organizations/{owner.organization.id}/").content.decode()
    assert "Invite a member" not in page and "Change role" not in page
    response = web(outsider).post(f"/organizations/{owner.organization.id}/", {"invitee": "otto", "role": "admin"})
    assert response.status_code == 403
    response = web(outsider).post(f"/organizations/{owner.organization.id}/members/otto/role/", {"role": "admin"})
    assert response.status_code == 403
    assert Membership.objects.get(user=outsider.user, organization=owner.organization).role == "member"


def test_an_admin_changes_a_role_explicitly_and_the_member_sees_who_and_when(web, owner, outsider):
    Membership.objects.create(user=outsider.user, organization=owner.organization, role="member")
    response = web(owner).post(f"/organizations/{owner.organization.id}/members/otto/role/", {"role": "admin"})
    assert response.status_code == 302
    page = web(outsider).get("/account/").content.decode()
    assert "Admin" in page and "by olivia" in page


def test_inviting_an_unknown_user_shows_an_error(web, owner):
    response = web(owner).post(f"/organizations/{owner.organization.id}/", {"invitee": "ghost", "role": "member"})
    assert response.status_code == 200 and "No such user." in response.content.decode()


def test_an_invitation_link_lets_a_new_person_sign_up_and_join(web, owner, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        web(owner).post(f"/organizations/{owner.organization.id}/", {"invitee": "nadia@example.org", "role": "member"})
    (mail,) = mailoutbox
    link = next(line for line in mail.body.split() if "/invitations/" in line)
    path = link.split("://", 1)[1].split("/", 1)[1]
    visitor = web(None)
    page = visitor.get(f"/{path}").content.decode()
    assert "St. Mercy Hospitals" in page and "sign up" in page
    key = path.rstrip("/").rsplit("/", 1)[1]
    response = visitor.post(f"/accounts/signup/?invitation={key}", {**GOOD, "kind": "", "invitation": key})
    assert response.status_code == 302
    assert Membership.objects.filter(user__username="nadia", organization=owner.organization).exists()
    assert web(None).get("/invitations/vbi_nonsense/").status_code == 404


def test_a_member_leaves_and_the_last_admin_is_told_why_not(web, owner, outsider):
    Membership.objects.create(user=outsider.user, organization=owner.organization, role="member")
    assert web(outsider).post(f"/organizations/{owner.organization.id}/leave/").status_code == 302
    assert not Membership.objects.filter(user=outsider.user, organization=owner.organization).exists()
    client = web(owner)
    response = client.post(f"/organizations/{owner.organization.id}/leave/", follow=True)
    assert "only admin" in response.content.decode()
    assert Membership.objects.filter(user=owner.user, organization=owner.organization).exists()


def test_password_reset_by_email_end_to_end(web, vendor, mailoutbox):
    vendor.user.email = "victor@example.org"
    vendor.user.save()
    client = web(None)
    assert client.post("/accounts/password_reset/", {"email": "victor@example.org"}).status_code == 302
    (mail,) = mailoutbox
    link = next(line for line in mail.body.splitlines() if "/accounts/reset/" in line)
    path = "/" + link.split("://", 1)[1].split("/", 1)[1]
    form_page = client.get(path, follow=True)
    assert "Choose a new password" in form_page.content.decode()
    set_path = form_page.redirect_chain[-1][0]
    new = "another-long-passphrase-42"
    response = client.post(set_path, {"new_password1": new, "new_password2": new})
    assert response.status_code == 302
    assert client.post("/accounts/login/", {"username": "victor", "password": new}).status_code == 302
    # an unknown address gets the same answer and no mail
    assert web(None).post("/accounts/password_reset/", {"email": "nobody@example.org"}).status_code == 302
    assert len(mailoutbox) == 1


def test_portal_log_in_is_throttled_after_repeated_failures(web, vendor, settings):
    client = web(None)
    codes = [
        client.post("/accounts/login/", {"username": "victor", "password": "guess"}).status_code
        for _ in range(settings.AXES_FAILURE_LIMIT)
    ]
    assert codes[:-1] == [200] * (settings.AXES_FAILURE_LIMIT - 1) and codes[-1] == 429
    locked = client.post("/accounts/login/", {"username": "victor", "password": "correct-horse-battery"})
    assert locked.status_code == 429 and "Too many failed log-ins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


def test_notification_preferences_are_saved_on_the_account_page(web, vendor):
    from marketplace.notifications.selectors import email_events_of

    client = web(vendor)
    response = client.post("/account/notifications/", {"email_events": ["submission.results_released"]})
    assert response.status_code == 302
    assert email_events_of(user=vendor.user) == ["submission.results_released"]
    page = client.get("/account/").content.decode()
    checked = re.findall(r'<input[^>]*name="email_events"[^>]*>', page)
    assert len(checked) == 4
    assert [tag for tag in checked if "checked" in tag] == [t for t in checked if "submission.results_released" in t]


def test_a_webhook_to_a_private_address_is_refused_unless_allowed(web, owner, settings):
    client = web(owner)
    path = f"/organizations/{owner.organization.id}/webhooks/"
    body = {"url": "http://127.0.0.1:9/hook", "events": ["submission.awaiting_approval"]}
    settings.VAULTBENCH_WEBHOOK_ALLOW_PRIVATE = False
    refused = client.post(path, body)
    assert refused.status_code == 200 and "private, loopback or reserved" in refused.content.decode()
    settings.VAULTBENCH_WEBHOOK_ALLOW_PRIVATE = True
    created = client.post(path, body).content.decode()
    assert "Copy its signing secret now" in created and "whsec_" in created
    listing = client.get(f"/organizations/{owner.organization.id}/").content.decode()
    assert "http://127.0.0.1:9/hook" in listing and "whsec_" not in listing


def test_creating_an_organization_from_the_account_page(web, outsider):
    response = web(outsider).post("/account/", {"name": "Otto Clinics", "kind": "data_owner"})
    organization = Organization.objects.get(name="Otto Clinics")
    assert response["Location"] == f"/organizations/{organization.id}/"


def test_personal_token_is_shown_once_stored_hashed_and_revocable(web, vendor):
    client = web(vendor)
    page = client.post("/account/tokens/", {"name": "CI uploads"}).content.decode()
    token = PersonalToken.objects.get(user=vendor.user, name="CI uploads")
    raw = page.split("data-token", 1)[0].rsplit('value="', 1)[1].split('"', 1)[0]
    assert raw.startswith("vbp_") and token_hash(raw) == token.key_hash
    assert raw not in client.get("/account/tokens/").content.decode()
    assert client.post(f"/account/tokens/{token.id}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_nobody_revokes_another_persons_token(web, vendor, second_vendor):
    from marketplace.accounts.services import personal_token_create

    token, _ = personal_token_create(user=vendor.user, name="mine")
    assert web(second_vendor).post(f"/account/tokens/{token.id}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_a_logged_in_person_accepts_or_declines_from_the_mailed_link(web, owner, vendor, outsider):
    from marketplace.accounts.services import invitation_create

    _, key = invitation_create(organization=owner.organization, actor=owner.user, role="member", email="otto@example.org")
    client = web(outsider)
    page = client.get(f"/invitations/{key}/").content.decode()
    assert "Accept as otto" in page
    response = client.post(f"/invitations/{key}/", {"answer": "accept"})
    assert response.status_code == 302 and response["Location"] == f"/organizations/{owner.organization.id}/"
    assert Membership.objects.filter(user=outsider.user, organization=owner.organization).exists()
    # used up: nobody else joins with the same link
    assert "no longer open" in web(vendor).get(f"/invitations/{key}/").content.decode()
    web(vendor).post(f"/invitations/{key}/", {"answer": "accept"})
    assert not Membership.objects.filter(user=vendor.user, organization=owner.organization).exists()
    # a username invitation cannot be taken by someone else holding its link
    _, named = invitation_create(organization=owner.organization, actor=owner.user, role="admin", username="victor")
    other = web(outsider)
    assert "for another account" in other.get(f"/invitations/{named}/").content.decode()
    other.post(f"/invitations/{named}/", {"answer": "accept"})
    assert Invitation.objects.get(invitee=vendor.user).status == "pending"
    web(vendor).post(f"/invitations/{named}/", {"answer": "decline"})
    assert Invitation.objects.get(invitee=vendor.user).status == "declined"
    assert not Membership.objects.filter(user=vendor.user, organization=owner.organization).exists()
