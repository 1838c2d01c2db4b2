"""Sign up, log in and out, the organization page and personal API tokens."""

from django.contrib.auth import get_user_model

from marketplace.accounts.models import Membership, Organization, PersonalToken
from marketplace.core.tokens import token_hash

User = get_user_model()
GOOD = {
    "username": "nadia",
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


def test_sign_up_without_an_organization_waits_to_be_added(web, owner, db):
    client = web(None)
    assert client.post("/accounts/signup/", {**GOOD, "kind": ""}).status_code == 302
    assert "You belong to no organization yet" in client.get("/account/").content.decode()
    response = web(owner).post(
        f"/organizations/{owner.organization.id}/", {"username": "nadia", "role": "member"}
    )
    assert response.status_code == 302
    assert Membership.objects.filter(user__username="nadia", organization=owner.organization).exists()


def test_sign_up_refuses_bad_input_and_keeps_nothing(web, vendor):
    client = web(None)
    cases = [
        {**GOOD, "password2": "something-else-entirely"},
        {**GOOD, "password1": "123", "password2": "123"},
        {**GOOD, "username": "victor"},  # taken
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


def test_organization_page_lists_members_and_only_admins_add(web, owner, outsider):
    Membership.objects.create(user=outsider.user, organization=owner.organization, role="member")
    page = web(owner).get(f"/organizations/{owner.organization.id}/").content.decode()
    assert "olivia" in page and "otto" in page and "Add a member" in page
    page = web(outsider).get(f"/organizations/{owner.organization.id}/").content.decode()
    assert "Add a member" not in page
    response = web(outsider).post(
        f"/organizations/{owner.organization.id}/", {"username": "otto", "role": "admin"}
    )
    assert response.status_code == 403
    assert Membership.objects.get(user=outsider.user, organization=owner.organization).role == "member"


def test_adding_an_unknown_user_shows_an_error(web, owner):
    response = web(owner).post(
        f"/organizations/{owner.organization.id}/", {"username": "ghost", "role": "member"}
    )
    assert response.status_code == 200 and "No such user." in response.content.decode()


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
