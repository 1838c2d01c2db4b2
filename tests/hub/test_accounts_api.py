"""People: organizations, memberships and personal API tokens."""

from rest_framework.test import APIClient

from marketplace.accounts.models import MemberRole, Membership, Organization, PersonalToken
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


def test_admin_adds_a_member(vendor, outsider):
    response = vendor.client.post(
        f"/api/v1/organizations/{vendor.organization.id}/members", {"username": "otto", "role": "member"}
    )
    assert response.status_code == 201, response.content
    assert Membership.objects.get(user=outsider.user, organization=vendor.organization).role == "member"
    assert AuditEvent.objects.filter(action="membership.set", object_id=str(vendor.organization.id)).exists()


def test_plain_member_cannot_add_members(vendor, outsider):
    Membership.objects.create(user=outsider.user, organization=vendor.organization, role=MemberRole.MEMBER)
    intruder = _persona("ivan", None, None)
    response = outsider.client.post(
        f"/api/v1/organizations/{vendor.organization.id}/members", {"username": "ivan"}
    )
    assert response.status_code == 403
    assert not Membership.objects.filter(user=intruder.user).exists()


def test_cannot_add_members_to_another_organization(vendor, second_vendor, outsider):
    response = vendor.client.post(
        f"/api/v1/organizations/{second_vendor.organization.id}/members", {"username": "otto"}
    )
    assert response.status_code == 404
    assert not Membership.objects.filter(user=outsider.user).exists()


def test_adding_an_unknown_user_is_not_found(vendor):
    response = vendor.client.post(
        f"/api/v1/organizations/{vendor.organization.id}/members", {"username": "nobody"}
    )
    assert response.status_code == 404
    assert error_code(response) == "not_found"


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
