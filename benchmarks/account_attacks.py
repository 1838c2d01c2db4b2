"""Replays of the account attacks issue 11 names, against a real hub over HTTP (gunicorn on a
free loopback port, SQLite in a temporary folder), before and after the accounts rework.

    python benchmarks/account_attacks.py [--guesses 100]

(a) password guessing: one address tries ``--guesses`` passwords for one username on the portal's
    log-in form and on the API's token endpoint; counted: how many guesses the hub evaluated
    (answered 200/302/401) before it refused (429). BEFORE = the same hub with django-axes off
    (AXES_ENABLED=0), which is what it was before: every guess evaluated.
(b) joining without consent: an organization's admin "adds" a stranger who already works for
    another vendor; counted: memberships created without the stranger's answer, role changes
    without their answer, and whether the stranger's next upload call is refused with
    ``organization_required``. BEFORE figures are from the removed endpoint's code path
    (``POST /organizations/{id}/members`` created the membership and set the role at once).
(c) SSRF: webhook URLs aimed at loopback, private, link-local (cloud metadata) and unspecified
    addresses; counted: how many the hub accepts. (There were no webhooks before.)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct-horse-battery-staple-9"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    def __init__(self, *, axes: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vb-acct-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")},
            "VAULTBENCH_VAR_DIR": str(self.dir), "VAULTBENCH_EMAIL_BACKEND": "locmem",
            "CELERY_TASK_ALWAYS_EAGER": "1",
        }  # fmt: skip
        if not axes:
            self.env["DJANGO_SETTINGS_MODULE"] = "account_attacks_settings_no_axes"
            self.env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT)])
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=self.env, check=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "marketplace.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", "1"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            try:
                requests.get(self.url + "/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.2)

    def sign_up(self, username: str, organization: str = "", kind: str = "") -> dict:
        body = {"username": username, "email": f"{username}@example.org", "password": PASSWORD, "token_name": "t"}
        if organization:
            body |= {"organization_name": organization, "kind": kind}
        response = requests.post(self.url + "/api/v1/accounts", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def guessing(hub: Hub, guesses: int) -> dict:
    hub.sign_up("victim")
    evaluated = {"api": 0, "portal": 0}
    for _ in range(guesses):
        r = requests.post(hub.url + "/api/v1/auth/token", json={"username": "victim", "password": "guess", "name": "x"}, timeout=10)
        if r.status_code != 429:
            evaluated["api"] += 1
    session = requests.Session()
    for _ in range(guesses):
        session.get(hub.url + "/accounts/login/", timeout=10)
        token = session.cookies.get("csrftoken", "")
        r = session.post(hub.url + "/accounts/login/", data={"username": "victim2", "password": "guess", "csrfmiddlewaretoken": token},
                         headers={"Referer": hub.url + "/accounts/login/"}, timeout=10, allow_redirects=False)  # fmt: skip
        if r.status_code != 429:
            evaluated["portal"] += 1
    right = requests.post(hub.url + "/api/v1/auth/token", json={"username": "victim", "password": PASSWORD, "name": "x"}, timeout=10)
    return {"guesses": guesses, "evaluated": evaluated, "right_password_after": right.status_code}


def consent(hub: Hub) -> dict:
    admin = hub.sign_up("mallory", "Mallory Models", "vendor")
    stranger = hub.sign_up("sam", "Sam Labs", "vendor")
    auth = {"Authorization": f"Bearer {admin['token']}"}
    org = admin["organizations"][0]["id"]
    r = requests.post(f"{hub.url}/api/v1/organizations/{org}/invitations", json={"username": "sam", "role": "admin"}, headers=auth, timeout=10)
    me = requests.get(hub.url + "/api/v1/me", headers={"Authorization": f"Bearer {stranger['token']}"}, timeout=10).json()
    joined = [o["name"] for o in me["organizations"]]
    probe = requests.post(hub.url + "/api/v1/tasks/1/access-requests", json={}, headers={"Authorization": f"Bearer {stranger['token']}"}, timeout=10)
    return {
        "invite_status": r.status_code,
        "memberships_without_consent": int("Mallory Models" in joined),
        "stranger_broken_with_organization_required": probe.json().get("error", {}).get("code") == "organization_required",
    }


def ssrf(hub: Hub) -> dict:
    hub.sign_up("olga", "Olga Hospital", "data_owner")
    targets = ["http://127.0.0.1:8000/", "http://localhost/", "http://10.0.0.5/", "http://172.16.0.1/", "http://192.168.1.1/",
               "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://0.0.0.0/", "http://[fd00::1]/"]  # fmt: skip
    # No REST endpoint for webhooks: the service the portal page calls, in the hub's own settings.
    code = (
        "import django,os,json;os.environ.setdefault('DJANGO_SETTINGS_MODULE','marketplace.settings');django.setup();"
        "from marketplace.accounts.models import Organization;from django.contrib.auth import get_user_model;"
        "from marketplace.notifications.services import webhook_endpoint_create;"
        "o=Organization.objects.get(name='Olga Hospital');u=get_user_model().objects.get(username='olga');ok=0\n"
        f"for t in {targets!r}:\n"
        "    try:\n        webhook_endpoint_create(organization=o,actor=u,url=t,events=['site.stuck']);ok+=1\n"
        "    except Exception:\n        pass\n"
        "print(json.dumps(ok))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=hub.env, check=True, capture_output=True, text=True)
    return {"targets": len(targets), "accepted": json.loads(out.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--guesses", type=int, default=100)
    args = parser.parse_args()
    results = {}
    for label, axes in (("before (no throttling)", False), ("after", True)):
        hub = Hub(axes=axes)
        try:
            results[label] = {"guessing": guessing(hub, args.guesses)}
            if axes:
                results[label] |= {"consent": consent(hub), "ssrf": ssrf(hub)}
        finally:
            hub.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
