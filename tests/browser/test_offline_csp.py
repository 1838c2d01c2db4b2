"""The portal and the API docs in real Chromium with no internet: nothing requested off loopback,
no Content-Security-Policy violation, and the account pages fit a 390 px phone (H4's pages)."""

from urllib.parse import urlsplit

import pytest

from marketplace.accounts.models import Membership
from tests.conftest import make_task

pytestmark = pytest.mark.browser

# Records every CSP violation the page sees (the header's enforcement is the browser's).
WATCH_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def _watch(page):
    hosts = []

    def on_route(route):
        hosts.append(urlsplit(route.request.url).hostname or "")
        if hosts[-1] not in ("127.0.0.1", "localhost"):
            return route.abort()  # as offline: nothing outside answers
        return route.continue_()

    page.route("**/*", on_route)
    page.add_init_script(WATCH_CSP)
    return hosts


def _log_in(page, username):
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "correct-horse-battery")
    page.click("button[type=submit]:has-text('Log in')")
    page.wait_for_url("**/")


def test_api_docs_render_from_the_hub_alone_with_a_strict_csp(new_page, db):
    page = new_page()
    hosts = _watch(page)
    response = page.goto("/api/docs/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "Vaultbench hub API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-tag", timeout=30_000)  # the schema was fetched and rendered
    assert set(hosts) <= {"127.0.0.1", "localhost"}, hosts
    assert page.evaluate("window.__csp") == []


def test_account_pages_keep_csp_load_nothing_external_and_fit_a_phone(new_page, owner, outsider):
    Membership.objects.create(user=outsider.user, organization=owner.organization, role="member")
    task = make_task(owner)
    page = new_page()
    hosts = _watch(page)
    _log_in(page, "olivia")
    pages = [
        "/", f"/tasks/{task.id}/", "/account/", "/account/tokens/", f"/organizations/{owner.organization.id}/",
        "/manage/",
    ]
    for path in pages:
        page.set_viewport_size({"width": 1280, "height": 860})
        response = page.goto(path)
        assert response.status == 200, path
        assert page.evaluate("window.__csp") == [], path
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(50)
        if path.startswith(("/account", "/organizations")):
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
    anonymous = new_page()
    _watch(anonymous)
    anonymous.set_viewport_size({"width": 390, "height": 844})
    for path in ("/accounts/login/", "/accounts/signup/", "/accounts/password_reset/", "/invitations/vbi_unknown/"):
        anonymous.goto(path)
        assert anonymous.evaluate("window.__csp") == [], path
        assert anonymous.evaluate("document.documentElement.scrollWidth") <= 390, path
    assert set(hosts) <= {"127.0.0.1", "localhost"}, hosts


def _axe(page) -> list[str]:
    from pathlib import Path

    import axe_playwright_python

    page.add_script_tag(content=(Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} -> {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"] if v["impact"] in ("serious", "critical")
    ]  # fmt: skip


@pytest.mark.parametrize("width", [1280, 390])
def test_account_page_types_pass_axe_and_fit_the_viewport(browser, live_server, owner, outsider, settings, width):
    """The account, tokens, organization (admin: members, roles, invitations, webhooks),
    invitation and password-reset pages: no serious or critical axe-core violation, no page wider
    than the viewport. Cost: ~10 s per width."""
    from marketplace.accounts.services import invitation_create
    from marketplace.notifications.services import webhook_endpoint_create

    settings.VAULTBENCH_WEBHOOK_ALLOW_PRIVATE = True
    Membership.objects.create(user=outsider.user, organization=owner.organization, role="member")
    _, key = invitation_create(organization=owner.organization, actor=owner.user, role="member", email="nina@example.org")
    from tests.conftest import _persona

    inviter = _persona("ingrid", "Ingrid Labs", "vendor")  # invites olivia: her account page lists it
    invitation_create(organization=inviter.organization, actor=inviter.user, role="admin", username="olivia")
    webhook_endpoint_create(organization=owner.organization, actor=owner.user, url="http://127.0.0.1:9/hook/with/a/rather/long/path/to/wrap", events=["site.stuck"])
    pages = {
        "olivia": ["/account/", "/account/tokens/", f"/organizations/{owner.organization.id}/", f"/invitations/{key}/"],
        None: ["/accounts/password_reset/", "/accounts/password_reset/done/", f"/invitations/{key}/",
               f"/accounts/signup/?invitation={key}", "/invitations/vbi_unknown/"],
    }  # fmt: skip
    problems = []
    for who, paths in pages.items():
        context = browser.new_context(viewport={"width": width, "height": 860}, base_url=live_server.url, bypass_csp=True)
        page = context.new_page()
        if who:
            _log_in(page, who)
        for path in paths:
            page.goto(path)
            wide = page.evaluate("document.documentElement.scrollWidth")
            if wide > width:
                problems.append(f"{path} at {width}: {wide} px wide")
            problems += [f"{path} at {width}: {v}" for v in _axe(page)]
        context.close()
    assert problems == []
