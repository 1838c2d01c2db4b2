"""Sites and their agent tokens: owned by a data owner organization, managed by its admins."""

from marketplace.accounts.models import MemberRole, Membership
from marketplace.audit.models import AuditEvent
from marketplace.sites.models import Site, SiteToken
from tests.conftest import make_site
from tests.hub.helpers import error_code


def test_owner_admin_creates_a_site_and_gets_its_token_once(owner):
    response = owner.client.post("/api/v1/sites", {"name": "oncology-ward"})
    assert response.status_code == 201, response.content
    raw = response.json()["token"]
    assert raw.startswith("vbs_")
    site = Site.objects.get(id=response.json()["site"]["id"])
    assert site.organization == owner.organization
    token = SiteToken.objects.get(site=site)
    assert all(
        raw not in str(value) for value in SiteToken.objects.filter(id=token.id).values().first().values()
    )
    assert AuditEvent.objects.filter(
        action="site.created", object_id=str(site.id), actor_user=owner.user
    ).exists()


def test_vendor_cannot_create_a_site(vendor):
    response = vendor.client.post("/api/v1/sites", {"name": "lab"})
    assert response.status_code == 403
    assert error_code(response) == "wrong_role"
    assert not Site.objects.exists()


def test_plain_member_of_owner_cannot_create_a_site(owner, outsider):
    Membership.objects.create(user=outsider.user, organization=owner.organization, role=MemberRole.MEMBER)
    response = outsider.client.post("/api/v1/sites", {"name": "lab"})
    assert response.status_code == 403
    assert not Site.objects.exists()


def test_duplicate_site_name_is_a_conflict(owner, site):
    response = owner.client.post("/api/v1/sites", {"name": "site-a"})
    assert response.status_code == 409
    assert Site.objects.filter(name="site-a").count() == 1


def test_site_name_of_wrong_type_is_refused(owner):
    response = owner.client.post("/api/v1/sites", {"name": ["a", "b"]}, format="json")
    assert response.status_code == 400
    assert error_code(response) == "invalid"


def test_site_list_shows_only_own_sites(owner, other_owner, vendor, django_assert_max_num_queries):
    for i in range(5):
        make_site(owner, f"site-{i}")
    make_site(other_owner, "north-1")
    with django_assert_max_num_queries(3):
        response = owner.client.get("/api/v1/sites")
    assert sorted(s["name"] for s in response.json()["results"]) == [f"site-{i}" for i in range(5)]
    assert other_owner.client.get("/api/v1/sites").json()["results"][0]["name"] == "north-1"
    assert vendor.client.get("/api/v1/sites").json()["results"] == []


def test_site_detail_of_another_organization_is_not_found(owner, site, other_owner, vendor):
    assert owner.client.get(f"/api/v1/sites/{site.site.id}").status_code == 200
    for persona in (other_owner, vendor):
        foreign = persona.client.get(f"/api/v1/sites/{site.site.id}")
        missing = persona.client.get("/api/v1/sites/999999")
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()


def test_heartbeat_makes_the_site_online(owner, site):
    assert owner.client.get(f"/api/v1/sites/{site.site.id}").json()["is_online"] is False
    site.client.post(
        "/api/v1/agent/heartbeat", {"agent_id": "a1", "capabilities": {"docker": True}}, format="json"
    )
    body = owner.client.get(f"/api/v1/sites/{site.site.id}").json()
    assert body["is_online"] is True and body["capabilities"] == {"docker": True}


def test_rotated_token_works_and_revoked_token_is_refused(owner, site):
    response = owner.client.post(f"/api/v1/sites/{site.site.id}/tokens")
    assert response.status_code == 201
    new_raw = response.json()["token"]
    old = SiteToken.objects.exclude(id=response.json()["id"]).get(site=site.site)
    revoke = owner.client.post(f"/api/v1/sites/{site.site.id}/tokens/{old.id}/revoke")
    assert revoke.status_code == 200 and revoke.json()["revoked_at"]
    refused = site.client.post("/api/v1/agent/heartbeat", {"agent_id": "a1"})
    assert refused.status_code == 401
    assert error_code(refused) == "authentication_failed"
    site.client.credentials(HTTP_AUTHORIZATION=f"Bearer {new_raw}")
    assert site.client.post("/api/v1/agent/heartbeat", {"agent_id": "a1"}).status_code == 200
    actions = set(AuditEvent.objects.filter(object_id=str(site.site.id)).values_list("action", flat=True))
    assert {"site.token_issued", "site.token_revoked"} <= actions


def test_token_list_never_shows_secrets_or_hashes(owner, site):
    response = owner.client.get(f"/api/v1/sites/{site.site.id}/tokens")
    assert response.status_code == 200
    assert set(response.json()[0]) == {"id", "display_prefix", "created_at", "last_used_at", "revoked_at"}


def test_other_owner_cannot_list_rotate_or_revoke_a_sites_tokens(site, other_owner):
    token = SiteToken.objects.get(site=site.site)
    assert other_owner.client.get(f"/api/v1/sites/{site.site.id}/tokens").status_code == 404
    assert other_owner.client.post(f"/api/v1/sites/{site.site.id}/tokens").status_code == 404
    assert (
        other_owner.client.post(f"/api/v1/sites/{site.site.id}/tokens/{token.id}/revoke").status_code == 404
    )
    assert SiteToken.objects.filter(site=site.site).count() == 1
    assert SiteToken.objects.get(id=token.id).revoked_at is None


def test_token_of_one_site_cannot_be_revoked_through_another(owner, site):
    other = make_site(owner, "site-b")
    token = SiteToken.objects.get(site=other.site)
    response = owner.client.post(f"/api/v1/sites/{site.site.id}/tokens/{token.id}/revoke")
    assert response.status_code == 404
    assert SiteToken.objects.get(id=token.id).revoked_at is None


def test_plain_member_cannot_manage_site_tokens(owner, site, outsider):
    Membership.objects.create(user=outsider.user, organization=owner.organization, role=MemberRole.MEMBER)
    assert outsider.client.get(f"/api/v1/sites/{site.site.id}").status_code == 200
    assert outsider.client.post(f"/api/v1/sites/{site.site.id}/tokens").status_code == 403
    assert SiteToken.objects.filter(site=site.site).count() == 1
