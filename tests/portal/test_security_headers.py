"""Production hygiene seen from the outside: the Content-Security-Policy header, API docs served
from the hub's own static files, friendly 404 and 500 pages."""

import re

from django.contrib.staticfiles import finders
from django.test import Client, RequestFactory
from django.views.defaults import server_error


def _csp(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.strip() for part in header.split(";") if part.strip()}


def test_every_portal_page_carries_a_strict_content_security_policy(web, vendor):
    for path in ("/", "/account/", "/accounts/login/"):
        policy = _csp(web(vendor if path == "/account/" else None).get(path))
        assert policy["script-src"] == "script-src 'self'"
        assert policy["style-src-elem"] == "style-src-elem 'self'"
        assert policy["object-src"] == "object-src 'none'" and policy["frame-ancestors"] == "frame-ancestors 'none'"
        assert "unsafe-eval" not in str(policy)


def test_portal_pages_hold_no_inline_script(web, vendor):
    for path in ("/", "/account/", "/account/tokens/", f"/organizations/{vendor.organization.id}/", "/accounts/signup/"):
        html = web(vendor if "account/" in path or "organizations" in path else None).get(path).content.decode()
        scripts = re.findall(r"<script\b([^>]*)>", html)
        assert scripts and all("src=" in attrs for attrs in scripts), (path, scripts)
        assert "<style" not in html, path
        assert not re.search(r"\son[a-z]+=", html), path  # no inline event handlers


def test_api_docs_are_served_from_the_hubs_own_static_files(db):
    client = Client()
    html = client.get("/api/docs/").content.decode()
    assert "cdn" not in html.lower() and "@latest" not in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui-bundle.js" in a for a in assets)
    for asset in assets:
        assert not asset.startswith(("http:", "https:", "//")), asset
        path = asset.split("?")[0]
        if path.startswith("/static/"):
            assert finders.find(path[len("/static/") :]), asset
    init = next(a for a in assets if "script" in a and "/api/docs/" in a)
    script = client.get(init.replace("&amp;", "&"))
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()


def test_a_missing_page_is_a_friendly_404_not_a_technical_one(db, settings):
    settings.DEBUG = False
    response = Client().get("/no/such/page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "Not found" in html and "Back to the tasks" in html and "URLconf" not in html


def test_the_500_page_needs_no_database_nor_context(db, settings):
    settings.DEBUG = False
    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    html = response.content.decode()
    assert "Something went wrong" in html and "Traceback" not in html
