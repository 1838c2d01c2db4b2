"""People: accounts, organizations, invitations, memberships and personal API tokens."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from marketplace.accounts.models import Invitation, MemberRole, Membership, Organization, PersonalToken
from marketplace.audit.models import AuditEvent
from tests.conftest import _persona
from tests.hub.helpers import error_code


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_me_lists_the_persons_organizations(vendor):
    response = vendor.client.get("/api/v1/me")
    assert response.status_code == 200
    assert response.json()["username"] == "victor"
    assert [o["name"] for o in response.json()["organizations"]] == ["Acme Models"]


def test_visitor_is_refused_on_me(visitor):
    response = visitor.get("/api/v1/me")
    assert response.status_code in (401, 403)
    assert error_code(response) == "not_authenticated"


def test_person_creates_an_organization_and_becomes_its_admin(outsider):
    response = outsider.client.post("/api/v1/organizations", {"name": "Initech", "kind": "vendor"})
    assert response.status_code == 201, response.content
    organization = Organization.objects.get(id=response.json()["id"])
    assert organization.kind == "vendor" and organization.slug == "initech"
    assert Membership.objects.get(user=outsider.user, organization=organization).role == MemberRole.ADMIN
    assert AuditEvent.objects.filter(action="organization.created", object_id=str(organization.id)).exists()


def test_duplicate_organization_name_is_a_conflict(owner, outsider):
    response = outsider.client.post(
        "/api/v1/organizations", {"name": "St. Mercy Hospitals", "kind": "vendor"}
    )
    assert response.status_code == 409
    assert error_code(response) == "conflict"
    assert Organization.objects.filter(name="St. Mercy Hospitals").count() == 1


def test_organization_with_unknown_kind_is_refused(outsider):
    response = outsider.client.post("/api/v1/organizations", {"name": "Initech", "kind": "king"})
    assert response.status_code == 400
    assert error_code(response) == "invalid"
    assert "kind" in response.json()["error"]["details"]
    assert not Organization.objects.filter(name="Initech").exists()


def test_organization_list_shows_only_own_organizations(owner, vendor, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):
        response = vendor.client.get("/api/v1/organizations")
    assert [o["name"] for o in response.json()["results"]] == ["Acme Models"]


def test_organization_detail_lists_members(vendor):
    response = vendor.client.get(f"/api/v1/organizations/{vendor.organization.id}")
    assert response.status_code == 200
    assert response.json()["members"][0]["username"] == "victor"


def test_other_organization_detail_is_not_found_like_a_missing_one(vendor, second_vendor):
    foreign = vendor.client.get(f"/api/v1/organizations/{second_vendor.organization.id}")
    missing = vendor.client.get("/api/v1/organizations/999999")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


def _invite(persona, organization, **body):
    return persona.client.post(f"/api/v1/organizations/{organization.id}/invitations", body)


def test_an_invited_person_joins_only_after_accepting(vendor, outsider, mailoutbox, django_capture_on_commit_callbacks):
    outsider.user.email = "otto@example.org"
    outsider.user.save()
    with django_capture_on_commit_callbacks(execute=True):
        response = _invite(vendor, vendor.organization, username="otto", role="member")
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "pending"
    assert not Membership.objects.filter(user=outsider.user, organization=vendor.organization).exists()
    assert [m.to for m in mailoutbox] == [["otto@example.org"]]
    assert "Acme Models" in mailoutbox[0].subject and "Nothing changes unless you accept" in mailoutbox[0].body

    listed = outsider.client.get("/api/v1/invitations").json()["results"]
    assert [(i["organization"]["name"], i["role"], i["invited_by"]) for i in listed] == [("Acme Models", "member", "victor")]
    accepted = outsider.client.post(f"/api/v1/invitations/{listed[0]['id']}/accept")
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    membership = Membership.objects.get(user=outsider.user, organization=vendor.organization)
    assert membership.role == "member" and membership.role_set_by == vendor.user
    assert AuditEvent.objects.filter(action="invitation.accepted", object_id=str(vendor.organization.id)).exists()
    assert outsider.client.post(f"/api/v1/invitations/{listed[0]['id']}/accept").status_code == 409


def test_a_declined_invitation_adds_nobody(vendor, outsider):
    invitation = _invite(vendor, vendor.organization, username="otto").json()
    assert outsider.client.post(f"/api/v1/invitations/{invitation['id']}/decline").json()["status"] == "declined"
    assert not Membership.objects.filter(user=outsider.user, organization=vendor.organization).exists()
    assert outsider.client.post(f"/api/v1/invitations/{invitation['id']}/accept").status_code == 409


def test_nobody_else_can_answer_a_persons_invitation(vendor, outsider, second_vendor):
    invitation = _invite(vendor, vendor.organization, username="otto").json()
    for path in ("accept", "decline"):
        response = second_vendor.client.post(f"/api/v1/invitations/{invitation['id']}/{path}")
        assert response.status_code == 404
    # the secret alone is not enough either: a username invitation is that person's
    response = second_vendor.client.post("/api/v1/invitations/redeem", {"token": invitation["token"]})
    assert response.status_code == 404
    assert not Membership.objects.filter(user=second_vendor.user, organization=vendor.organization).exists()


def test_plain_member_cannot_invite(vendor, outsider):
    Membership.objects.create(user=outsider.user, organization=vendor.organization, role=MemberRole.MEMBER)
    intruder = _persona("ivan", None, None)
    response = _invite(outsider, vendor.organization, username="ivan")
    assert response.status_code == 403
    assert not Invitation.objects.filter(invitee=intruder.user).exists()


def test_cannot_invite_into_another_organization(vendor, second_vendor, outsider):
    response = _invite(vendor, second_vendor.organization, username="otto")
    assert response.status_code == 404
    assert not Invitation.objects.exists()


def test_inviting_an_unknown_user_is_not_found_and_an_existing_member_a_conflict(vendor, outsider):
    response = _invite(vendor, vendor.organization, username="nobody")
    assert response.status_code == 404 and error_code(response) == "not_found"
    response = _invite(vendor, vendor.organization, username="victor")
    assert response.status_code == 409 and error_code(response) == "already_member"
    assert _invite(vendor, vendor.organization, username="otto").status_code == 201
    again = _invite(vendor, vendor.organization, username="otto")
    assert again.status_code == 409 and error_code(again) == "already_invited"


def test_an_invitation_by_email_is_accepted_by_signing_up_with_its_secret(
    vendor, visitor, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        created = _invite(vendor, vendor.organization, email="Nina@Example.ORG", role="admin").json()
    (mail,) = mailoutbox
    assert mail.to == ["Nina@example.org"]
    assert f"/invitations/{created['token']}/" in mail.body
    client = APIClient(enforce_csrf_checks=True)
    response = client.post("/api/v1/accounts", {
        "username": "nina", "email": "nina@example.org", "password": "a-long-unusual-passphrase",
        "invitation": created["token"], "token_name": "ci",
    })  # fmt: skip
    assert response.status_code == 201, response.content
    assert [o["name"] for o in response.json()["organizations"]] == ["Acme Models"]
    nina = get_user_model().objects.get(username="nina")
    assert Membership.objects.get(user=nina, organization=vendor.organization).role == "admin"
    assert bearer(response.json()["token"]).get("/api/v1/me").json()["username"] == "nina"


def test_a_revoked_or_expired_invitation_cannot_be_accepted(vendor, outsider):
    revoked = _invite(vendor, vendor.organization, username="otto").json()
    path = f"/api/v1/organizations/{vendor.organization.id}/invitations/{revoked['id']}/revoke"
    assert vendor.client.post(path).json()["status"] == "revoked"
    response = outsider.client.post(f"/api/v1/invitations/{revoked['id']}/accept")
    assert response.status_code == 409 and error_code(response) == "invitation_closed"
    expired = _invite(vendor, vendor.organization, email="late@example.org").json()
    Invitation.objects.filter(id=expired["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = outsider.client.post("/api/v1/invitations/redeem", {"token": expired["token"]})
    assert response.status_code == 409
    assert not Membership.objects.filter(user=outsider.user, organization=vendor.organization).exists()


def test_a_role_changes_only_by_an_admins_explicit_action_and_the_member_is_told(
    vendor, outsider, mailoutbox, django_capture_on_commit_callbacks
):
    outsider.user.email = "otto@example.org"
    outsider.user.save()
    Membership.objects.create(user=outsider.user, organization=vendor.organization, role=MemberRole.MEMBER)
    # inviting an existing member no longer changes their role silently
    assert _invite(vendor, vendor.organization, username="otto", role="admin").status_code == 409
    assert Membership.objects.get(user=outsider.user, organization=vendor.organization).role == "member"
    with django_capture_on_commit_callbacks(execute=True):
        response = vendor.client.post(
            f"/api/v1/organizations/{vendor.organization.id}/members/otto/role", {"role": "admin"}
        )
    assert response.status_code == 200 and response.json()["role"] == "admin"
    membership = Membership.objects.get(user=outsider.user, organization=vendor.organization)
    assert membership.role_set_by == vendor.user and membership.role_set_at is not None
    assert [m.to for m in mailoutbox] == [["otto@example.org"]] and "from member to admin" in mailoutbox[0].body
    assert AuditEvent.objects.filter(action="membership.role_changed").count() == 1


def test_the_last_admin_can_neither_be_demoted_nor_leave(vendor):
    path = f"/api/v1/organizations/{vendor.organization.id}"
    response = vendor.client.post(f"{path}/members/victor/role", {"role": "member"})
    assert response.status_code == 409 and error_code(response) == "last_admin"
    response = vendor.client.post(f"{path}/leave")
    assert response.status_code == 409 and error_code(response) == "last_admin"
    assert Membership.objects.get(user=vendor.user, organization=vendor.organization).role == "admin"


def test_a_member_leaves_an_organization(vendor, outsider):
    Membership.objects.create(user=outsider.user, organization=vendor.organization, role=MemberRole.MEMBER)
    response = outsider.client.post(f"/api/v1/organizations/{vendor.organization.id}/leave")
    assert response.status_code == 204
    assert not Membership.objects.filter(user=outsider.user, organization=vendor.organization).exists()
    assert AuditEvent.objects.filter(action="membership.left").exists()
    assert outsider.client.get(f"/api/v1/organizations/{vendor.organization.id}").status_code == 404


def test_several_vendor_organizations_get_a_clear_error_listing_them(vendor, second_vendor):
    Membership.objects.create(user=vendor.user, organization=second_vendor.organization, role=MemberRole.MEMBER)
    response = vendor.client.post("/api/v1/tasks/999999/access-requests", {})
    assert response.status_code == 400 and error_code(response) == "organization_required"
    error = response.json()["error"]
    assert f"Acme Models (id {vendor.organization.id})" in error["message"] and "Globex AI" in error["message"]
    assert "--organization" in error["message"]
    assert [o["name"] for o in error["details"]["organizations"]] == ["Acme Models", "Globex AI"]


# --- accounts for automated set-ups ----------------------------------------------------------

SIGN_UP = {"username": "nadia", "email": "nadia@example.org", "password": "a-long-unusual-passphrase"}


def test_sign_up_over_the_api_needs_no_session_nor_csrf_and_returns_a_working_token(db):
    client = APIClient(enforce_csrf_checks=True)
    response = client.post(
        "/api/v1/accounts", {**SIGN_UP, "organization_name": "Nadia Labs", "kind": "vendor", "token_name": "ci"}
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["email"] == "nadia@example.org" and [o["kind"] for o in body["organizations"]] == ["vendor"]
    assert bearer(body["token"]).get("/api/v1/me").json()["username"] == "nadia"
    assert Membership.objects.get(user__username="nadia").role == "admin"


def test_api_sign_up_applies_the_portals_checks_and_keeps_nothing(vendor):
    vendor.user.email = "victor@example.org"
    vendor.user.save()
    cases = [
        ({**SIGN_UP, "password": "123"}, "invalid"),
        ({**SIGN_UP, "password": "nadia-example"}, "invalid"),  # too close to the username
        ({**SIGN_UP, "username": "Victor"}, "username_taken"),
        ({**SIGN_UP, "email": "VICTOR@example.org"}, "email_taken"),
        ({**SIGN_UP, "email": "not-an-address"}, "invalid_email"),
        ({**SIGN_UP, "username": "bad name!"}, "invalid"),
        ({**SIGN_UP, "organization_name": "Nadia Labs"}, "kind_required"),
        ({**SIGN_UP, "organization_name": "Acme Models", "kind": "vendor"}, "conflict"),
        ({**SIGN_UP, "invitation": "vbi_not-a-real-one"}, "not_found"),
    ]
    for data, code in cases:
        response = APIClient().post("/api/v1/accounts", data)
        assert 400 <= response.status_code < 500, data
        assert error_code(response) == code, (data, response.json())
    assert not get_user_model().objects.filter(username="nadia").exists()


def test_a_token_from_username_and_password(vendor):
    client = APIClient(enforce_csrf_checks=True)
    response = client.post("/api/v1/auth/token", {"username": "victor", "password": "correct-horse-battery", "name": "ci"})
    assert response.status_code == 201, response.content
    assert bearer(response.json()["token"]).get("/api/v1/me").json()["username"] == "victor"
    wrong = client.post("/api/v1/auth/token", {"username": "victor", "password": "wrong", "name": "ci"})
    assert wrong.status_code == 401 and error_code(wrong) == "invalid_credentials"
    assert PersonalToken.objects.filter(user=vendor.user).count() == 1


def test_log_ins_are_throttled_after_repeated_failures_on_the_api(vendor, settings):
    client = APIClient()
    codes = [
        client.post("/api/v1/auth/token", {"username": "victor", "password": "guess", "name": "x"}).status_code
        for _ in range(settings.AXES_FAILURE_LIMIT)
    ]
    assert codes == [401] * (settings.AXES_FAILURE_LIMIT - 1) + [429]  # the limit-th failure locks
    # now even the right password is refused for a while, from this address, for this user
    locked = client.post("/api/v1/auth/token", {"username": "victor", "password": "correct-horse-battery", "name": "x"})
    assert locked.status_code == 429 and error_code(locked) == "locked_out" and locked["Retry-After"] == "900"
    assert not PersonalToken.objects.filter(user=vendor.user).exists()
    from axes.models import AccessAttempt

    assert AccessAttempt.objects.get(username="victor").failures_since_start >= settings.AXES_FAILURE_LIMIT
    # another user from the same address is not locked out
    other = _persona("walter", None, None)
    ok = client.post("/api/v1/auth/token", {"username": "walter", "password": "correct-horse-battery", "name": "x"})
    assert ok.status_code == 201 and PersonalToken.objects.filter(user=other.user).count() == 1


def test_api_sign_up_is_rate_limited(db, settings):
    from django.core.cache import cache

    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"sign_up": "2/hour"}}
    from rest_framework.settings import api_settings

    api_settings.reload()
    from rest_framework.throttling import ScopedRateThrottle

    ScopedRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    try:
        codes = [
            APIClient().post("/api/v1/accounts", {**SIGN_UP, "username": f"n{i}", "email": f"n{i}@example.org"}).status_code
            for i in range(3)
        ]
    finally:
        api_settings.reload()
        ScopedRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
        cache.clear()
    assert codes == [201, 201, 429]
    assert get_user_model().objects.filter(username__startswith="n").count() == 2


def test_a_person_sets_their_email_and_the_old_address_is_told(vendor, mailoutbox, django_capture_on_commit_callbacks):
    vendor.user.email = "old@example.org"
    vendor.user.save()
    with django_capture_on_commit_callbacks(execute=True):
        response = vendor.client.patch("/api/v1/me", {"email": "new@example.org"})
    assert response.status_code == 200 and response.json()["email"] == "new@example.org"
    assert [m.to for m in mailoutbox] == [["old@example.org"]]


def test_personal_token_is_shown_once_and_stored_hashed(vendor):
    response = vendor.client.post("/api/v1/tokens", {"name": "cli"})
    assert response.status_code == 201, response.content
    raw = response.json()["token"]
    assert raw.startswith("vbp_")
    token = PersonalToken.objects.get(id=response.json()["id"])
    stored = [str(v) for v in PersonalToken.objects.filter(id=token.id).values().first().values()]
    assert all(raw not in value for value in stored)
    assert len(token.key_hash) == 64 and token.key_hash != raw
    listed = vendor.client.get("/api/v1/tokens").json()["results"]
    assert [t["id"] for t in listed] == [token.id] and "token" not in listed[0]
    assert AuditEvent.objects.filter(action="token.created", object_id=str(token.id)).exists()


def test_personal_token_authenticates_and_records_use(vendor):
    raw = vendor.client.post("/api/v1/tokens", {"name": "cli"}).json()["token"]
    response = bearer(raw).get("/api/v1/me")
    assert response.status_code == 200 and response.json()["username"] == "victor"
    assert PersonalToken.objects.get(user=vendor.user).last_used_at is not None


def test_revoked_personal_token_is_refused(vendor):
    created = vendor.client.post("/api/v1/tokens", {"name": "cli"}).json()
    response = vendor.client.post(f"/api/v1/tokens/{created['id']}/revoke")
    assert response.status_code == 200 and response.json()["revoked_at"]
    refused = bearer(created["token"]).get("/api/v1/me")
    assert refused.status_code == 401
    assert error_code(refused) == "authentication_failed"
    assert AuditEvent.objects.filter(action="token.revoked", object_id=str(created["id"])).exists()


def test_unknown_personal_token_is_refused(db):
    assert bearer("vbp_" + "x" * 43).get("/api/v1/me").status_code == 401


def test_cannot_revoke_another_persons_token(vendor, second_vendor):
    created = vendor.client.post("/api/v1/tokens", {"name": "cli"}).json()
    response = second_vendor.client.post(f"/api/v1/tokens/{created['id']}/revoke")
    assert response.status_code == 404
    assert PersonalToken.objects.get(id=created["id"]).revoked_at is None
    assert bearer(created["token"]).get("/api/v1/me").status_code == 200


def test_token_list_shows_only_own_tokens(vendor, second_vendor, django_assert_max_num_queries):
    for i in range(3):
        vendor.client.post("/api/v1/tokens", {"name": f"cli-{i}"})
    second_vendor.client.post("/api/v1/tokens", {"name": "other"})
    with django_assert_max_num_queries(3):
        response = vendor.client.get("/api/v1/tokens")
    assert sorted(t["name"] for t in response.json()["results"]) == ["cli-0", "cli-1", "cli-2"]


def test_site_token_is_refused_on_people_endpoints(site):
    for method, path in [
        ("get", "/api/v1/me"),
        ("get", "/api/v1/tokens"),
        ("get", "/api/v1/tasks"),
        ("get", "/api/v1/submissions"),
        ("get", "/api/v1/jobs"),
        ("get", "/api/v1/sites"),
    ]:
        response = getattr(site.client, method)(path)
        assert response.status_code == 401, (path, response.status_code)
        assert "error" in response.json()
