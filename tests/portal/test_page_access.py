"""Every page, every role: who may see it, and what the others get (login, 403 for a wrong role,
404 for an object that is missing or not theirs)."""

import pytest

from marketplace.catalog.services import task_access_request, task_create
from tests.conftest import TASK_SPEC, make_site, make_task, register_shard
from tests.portal.helpers import hold, score, upload_model

ROLES = ["visitor", "outsider", "vendor", "second_vendor", "owner", "other_owner"]
LOGIN = "login"


@pytest.fixture
def world(owner, other_owner, vendor, second_vendor, outsider):
    site = make_site(owner, "north")
    public = make_task(owner, title="Public task")
    register_shard(site, public)
    invite = make_task(owner, title="Invite task", visibility="invite_only")
    register_shard(site, invite)
    draft = task_create(
        organization=owner.organization, actor=owner.user, spec={**TASK_SPEC, "title": "Draft task"}
    )
    task_access_request(task=invite, vendor=vendor.organization, actor=vendor.user)
    submission = upload_model(vendor, public)
    score(site, submission, {"roc_auc": 0.91, "accuracy": 0.8})
    held = make_task(owner, title="Held task", requires_release_approval=True)
    register_shard(site, held)
    held_job = hold(site, upload_model(vendor, held, name="held"))
    return {
        "personas": {"owner": owner, "other_owner": other_owner, "vendor": vendor, "second_vendor": second_vendor,
                     "outsider": outsider, "visitor": None},
        "public": public, "invite": invite, "draft": draft, "site": site.site, "submission": submission,
        "held_job": held_job,
    }  # fmt: skip


def _all(status):
    return dict.fromkeys(ROLES, status)


def _logged_in(status, **overrides):
    return {**dict.fromkeys(ROLES, status), "visitor": LOGIN, **overrides}


OWNER_ONLY = _logged_in(403, owner=200, other_owner=200)
VENDOR_ONLY = _logged_in(403, vendor=200, second_vendor=200)

# (name, url template, expected status per role)
PAGES = [
    ("home", "/", _all(200)),
    ("public task", "/tasks/{public}/", _all(200)),
    ("public leaderboard part", "/tasks/{public}/leaderboard/", _all(200)),
    (
        "invite-only task",
        "/tasks/{invite}/",
        {**_all(404), "vendor": 200, "second_vendor": 200, "owner": 200},
    ),
    ("draft task", "/tasks/{draft}/", {**_all(404), "owner": 200}),
    ("missing task", "/tasks/999999/", _all(404)),
    ("sign up", "/accounts/signup/", {**_all(302), "visitor": 200}),
    ("log in", "/accounts/login/", _all(200)),
    ("account", "/account/", _logged_in(200)),
    ("tokens", "/account/tokens/", _logged_in(200)),
    ("owner organization", "/organizations/{owner_org}/", _logged_in(404, owner=200)),
    ("vendor organization", "/organizations/{vendor_org}/", _logged_in(404, vendor=200)),
    ("upload to public task", "/tasks/{public}/submit/", VENDOR_ONLY),
    ("upload to invite-only task", "/tasks/{invite}/submit/", _logged_in(403)),
    ("upload to draft task", "/tasks/{draft}/submit/", _logged_in(403, vendor=404, second_vendor=404)),
    ("my submissions", "/submissions/", VENDOR_ONLY),
    ("my submissions, live part", "/submissions/status/", VENDOR_ONLY),
    ("owner desk", "/manage/", OWNER_ONLY),
    ("new task", "/manage/tasks/new/", OWNER_ONLY),
    ("manage task", "/manage/tasks/{public}/", _logged_in(403, owner=200, other_owner=404)),
    ("edit task", "/manage/tasks/{public}/edit/", _logged_in(403, owner=200, other_owner=404)),
    ("edit draft task", "/manage/tasks/{draft}/edit/", _logged_in(403, owner=200, other_owner=404)),
    ("sites", "/manage/sites/", OWNER_ONLY),
    ("sites, live part", "/manage/sites/status/", OWNER_ONLY),
    ("site", "/manage/sites/{site}/", _logged_in(403, owner=200, other_owner=404)),
    ("approvals", "/manage/approvals/", OWNER_ONLY),
    ("ledger", "/manage/ledger/", OWNER_ONLY),
    ("ledger CSV", "/manage/ledger.csv", OWNER_ONLY),
    ("ledger with leakage of a task", "/manage/ledger/?task={public}", OWNER_ONLY),
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("name", "url", "expected"), PAGES, ids=[p[0] for p in PAGES])
def test_page_answers_each_role(world, web, role, name, url, expected):
    persona = world["personas"][role]
    url = url.format(
        public=world["public"].id, invite=world["invite"].id, draft=world["draft"].id, site=world["site"].id,
        owner_org=world["personas"]["owner"].organization.id, vendor_org=world["personas"]["vendor"].organization.id,
    )  # fmt: skip
    response = web(persona).get(url)
    want = expected[role]
    if want == LOGIN:
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), response
    else:
        assert response.status_code == want, f"{name} as {role}: {response.status_code}"


# Actions (POST): each refuses the roles that may not take it, and changes nothing for them.
ACTIONS = [
    ("open task", "/manage/tasks/{draft}/open/", "owner"),
    ("close task", "/manage/tasks/{public}/close/", "owner"),
    ("approve access", "/manage/approvals/tasks/{invite}/vendors/{vendor_org}/approve/", "owner"),
    ("reject access", "/manage/approvals/tasks/{invite}/vendors/{vendor_org}/reject/", "owner"),
    ("request access", "/tasks/{invite}/request-access/", "second_vendor"),
    ("release a held result", "/manage/approvals/results/{held_job}/release/", "owner"),
    ("withhold a held result", "/manage/approvals/results/{held_job}/withhold/", "owner"),
    ("nominate a final submission", "/submissions/{submission}/nominate/", "vendor"),
]


@pytest.mark.parametrize(("name", "url", "allowed"), ACTIONS, ids=[a[0] for a in ACTIONS])
@pytest.mark.parametrize("role", ROLES)
def test_actions_refuse_other_roles(world, web, role, name, url, allowed):
    from marketplace.audit.models import AuditEvent

    persona = world["personas"][role]
    url = url.format(
        public=world["public"].id, invite=world["invite"].id, draft=world["draft"].id,
        vendor_org=world["personas"]["vendor"].organization.id, held_job=world["held_job"].id,
        submission=world["submission"].id,
    )  # fmt: skip
    before = AuditEvent.objects.count()
    response = web(persona).post(url)
    if role == allowed:
        assert response.status_code == 302
        assert AuditEvent.objects.count() > before
    else:
        # Visitors go to the login page; a wrong role or a foreign object is refused (403/404); a
        # vendor that already asked is sent back to the task with a message. Nothing changes.
        assert response.status_code in (302, 403, 404)
        if persona is None:
            assert response["Location"].startswith("/accounts/login/")
        assert AuditEvent.objects.count() == before


def test_actions_need_post(world, web):
    owner = world["personas"]["owner"]
    assert web(owner).get(f"/manage/tasks/{world['draft'].id}/open/").status_code == 405


def test_unknown_action_words_are_not_found(world, web):
    owner = world["personas"]["owner"]
    assert web(owner).post(f"/manage/tasks/{world['draft'].id}/delete/").status_code == 404
