"""Every object endpoint against every role: who may read it, and that everyone else gets the same
404 as for a missing object (people endpoints refuse visitors with 401/403 and site tokens with 401)."""

import pytest
from rest_framework.test import APIClient

from marketplace.accounts.services import personal_token_create
from marketplace.catalog.models import Task
from tests.conftest import make_site, make_task, register_shard
from tests.hub.helpers import claim, release_body, submit, with_receipt

ROLES = ["visitor", "outsider", "vendor", "second_vendor", "owner", "other_owner", "site_token"]


@pytest.fixture
def world(owner, other_owner, vendor, second_vendor, outsider, visitor, site):
    public = make_task(owner, title="Public")
    register_shard(site, public)
    invite = make_task(owner, title="Invite", visibility="invite_only")
    vendor.client.post(f"/api/v1/tasks/{invite.id}/access-requests", {})
    submission = submit(vendor, public)
    job = claim(site)
    clients = {
        "visitor": visitor, "outsider": outsider.client, "vendor": vendor.client,
        "second_vendor": second_vendor.client, "owner": owner.client, "other_owner": other_owner.client,
        "site_token": site.client,
    }  # fmt: skip
    ids = {
        "public": public.id, "invite": invite.id, "submission": submission.id, "job": job["id"],
        "site": site.site.id, "owner_org": owner.organization.id, "vendor_org": vendor.organization.id,
    }  # fmt: skip
    return clients, ids


# (path, roles that may read it, whether anonymous visitors may call it at all)
READS = [
    (
        "/api/v1/tasks/{public}",
        {"visitor", "outsider", "vendor", "second_vendor", "owner", "other_owner"},
        True,
    ),
    ("/api/v1/tasks/{invite}", {"vendor", "second_vendor", "owner"}, True),
    (
        "/api/v1/tasks/{public}/leaderboard",
        {"visitor", "outsider", "vendor", "second_vendor", "owner", "other_owner"},
        True,
    ),
    ("/api/v1/tasks/{invite}/leaderboard", {"owner"}, True),
    ("/api/v1/tasks/{public}/shards", {"owner"}, False),
    ("/api/v1/tasks/{invite}/access-requests", {"owner"}, False),
    ("/api/v1/submissions/{submission}", {"vendor", "owner"}, False),
    ("/api/v1/submissions/{submission}/artifact", {"vendor"}, False),
    ("/api/v1/jobs/{job}", {"owner"}, False),  # vendors see no jobs (docs/disclosure.md)
    ("/api/v1/sites/{site}", {"owner"}, False),
    ("/api/v1/sites/{site}/tokens", {"owner"}, False),
    ("/api/v1/organizations/{owner_org}", {"owner"}, False),
    ("/api/v1/organizations/{vendor_org}", {"vendor"}, False),
]

# Writes on someone else's objects: (method, path, the only role allowed)
WRITES = [
    ("patch", "/api/v1/tasks/{public}", "owner"),
    ("post", "/api/v1/tasks/{public}/close", "owner"),
    ("put", "/api/v1/tasks/{public}/sample", "owner"),
    ("post", "/api/v1/tasks/{invite}/access-requests/{vendor_org}/approve", "owner"),
    ("post", "/api/v1/tasks/{invite}/access-requests/{vendor_org}/reject", "owner"),
    ("post", "/api/v1/jobs/{job}/approve", "owner"),
    ("post", "/api/v1/jobs/{job}/reject", "owner"),
    ("post", "/api/v1/sites/{site}/tokens", "owner"),
    ("post", "/api/v1/organizations/{owner_org}/invitations", "owner"),
    ("post", "/api/v1/organizations/{vendor_org}/invitations", "vendor"),
    ("post", "/api/v1/organizations/{owner_org}/members/olivia/role", "owner"),
    ("post", "/api/v1/organizations/{vendor_org}/members/victor/role", "vendor"),
]


def _missing(path: str) -> str:
    """The same path with its first object id replaced by one that does not exist."""
    return path.replace("{", "{missing_", 1)


class _Missing(dict):
    def __missing__(self, key):
        return 999999


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("path", "allowed", "anonymous_ok"), READS, ids=[r[0] for r in READS])
def test_object_reads_are_allowed_only_to_their_roles(world, role, path, allowed, anonymous_ok):
    clients, ids = world
    response = clients[role].get(path.format(**ids))
    if role in allowed:
        assert response.status_code == 200, response.content
        return
    if role == "site_token":
        assert response.status_code == 401
    elif role == "visitor" and not anonymous_ok:
        assert response.status_code in (401, 403)
    else:
        assert response.status_code == 404, response.content
        missing = clients[role].get(_missing(path).format_map(_Missing(ids)))
        assert missing.status_code == 404 and missing.json() == response.json()


WRITE_CASES = [(method, path, role) for method, path, allowed in WRITES for role in ROLES if role != allowed]


@pytest.mark.parametrize(
    ("method", "path", "role"), WRITE_CASES, ids=[f"{m} {p} as {r}" for m, p, r in WRITE_CASES]
)
def test_writes_on_others_objects_are_refused_like_missing_ones(world, method, path, role):
    """The allowed role's writes are tested with their endpoint's own file."""
    clients, ids = world
    response = getattr(clients[role], method)(path.format(**ids), {}, format="json")
    if role == "site_token":
        assert response.status_code == 401
    elif role == "visitor":
        assert response.status_code in (401, 403, 404)
    else:
        assert response.status_code == 404, response.content


AGENT_CALLS = [
    ("post", "/api/v1/agent/jobs/{job}/lease", {"agent_id": "agent-1"}),
    ("get", "/api/v1/agent/jobs/{job}/artifact", None),
    (
        "post",
        "/api/v1/agent/jobs/{job}/result",
        "a release of the public task",
    ),
    ("post", "/api/v1/agent/jobs/{job}/failure", {"agent_id": "agent-1", "reason": "invalid_artifact"}),
]


@pytest.mark.parametrize(("method", "path", "body"), AGENT_CALLS, ids=[c[1] for c in AGENT_CALLS])
def test_agent_job_endpoints_refuse_other_sites_people_and_visitors(
    world, owner, other_owner, method, path, body
):
    clients, ids = world
    url = path.format(**ids)
    if body == "a release of the public task":
        body = with_receipt(release_body(Task.objects.get(id=ids["public"])))
    _, raw = personal_token_create(user=owner.user, name="cli")
    personal = APIClient()
    personal.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    callers = {
        "sibling_site": (make_site(owner, "site-b").client, {404}),
        "foreign_site": (make_site(other_owner, "north-1").client, {404}),
        "personal_token": (personal, {401}),
        "session_person": (clients["owner"], {401, 403}),
        "visitor": (clients["visitor"], {401, 403}),
    }
    for name, (client, expected) in callers.items():
        response = getattr(client, method)(url, body, format="json") if body else getattr(client, method)(url)
        assert response.status_code in expected, (name, response.status_code)
    own = (
        getattr(clients["site_token"], method)(url, body, format="json")
        if body
        else clients["site_token"].get(url)
    )
    assert own.status_code == 200, own.content
