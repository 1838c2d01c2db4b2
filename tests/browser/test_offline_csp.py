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
