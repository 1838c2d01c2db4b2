"""nginx in front of the hub with the project's locations (deploy/nginx/vaultbench-hub-locations.conf),
over real HTTP: anonymous leaderboard reads are micro-cached (1 s) and answered 304 from the
cache; a cookie or an Authorization header always reaches the hub (the owner's board is never
served from, nor stored in, the cache); a 404 is not cached; a new score reaches anonymous
readers once the cached copy expires. Needs the nginx binary (Debian: nginx-light;
`python benchmarks/leaderboard_scale.py --via nginx` installs it), skipped without it."""

import http.client
import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from marketplace.leaderboard.models import LeaderboardEntry
from marketplace.leaderboard.standings import standings_refresh
from marketplace.submissions.models import Submission
from tests.conftest import make_task

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)")


def _score(task, vendor, name: str, *, released: bool) -> None:
    at = timezone.now() + (timedelta(minutes=-1) if released else timedelta(hours=1))
    submission = Submission.objects.create(vendor=vendor, task=task, name=name, artifact="a", artifact_format="sklearn",
                                           original_filename="model.joblib", size=1, sha256=name.ljust(64, "0"),
                                           status="scored", results_visible_at=at)  # fmt: skip
    LeaderboardEntry.objects.create(task=task, submission=submission, metrics={"roc_auc": 0.8, "accuracy": 0.7},
                                    n_rows=100, n_sites=1)  # fmt: skip
    standings_refresh(task_id=task.id)


def _get(port: int, url: str, **headers) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", url, headers={"Host": "localhost", **headers})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture
def nginx_port(live_server, tmp_path):
    import importlib.util

    # By path: another distribution installs a top-level `benchmarks` package.
    spec = importlib.util.spec_from_file_location("leaderboard_scale", ROOT / "benchmarks/leaderboard_scale.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    port = bench.free_port()
    process = bench.start_nginx(tmp_path, int(live_server.url.rsplit(":", 1)[1]), port)
    yield port
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_anonymous_board_reads_are_micro_cached_and_everyone_else_reaches_the_hub(owner, vendor, nginx_port):
    from django.test import Client

    task = make_task(owner, release_delay_seconds=0)
    _score(task, vendor.organization, "released-model", released=True)
    _score(task, vendor.organization, "pending-model", released=False)  # the owner sees it, visitors not yet
    url = f"/api/v1/tasks/{task.id}/leaderboard?view=all"  # both models are one vendor's

    status, first_headers, first = _get(nginx_port, url)
    assert status == 200 and first_headers["x-cache-status"] in ("MISS", "EXPIRED")
    assert b"released-model" in first and b"pending-model" not in first
    status, headers, again = _get(nginx_port, url)
    assert (status, headers["x-cache-status"], again) == (200, "HIT", first)
    status, headers, body = _get(nginx_port, url, **{"If-None-Match": first_headers["etag"]})
    assert (status, body) == (304, b"")

    # The owner (a session cookie) and any token holder are answered by the hub, never the cache.
    browser = Client()
    browser.force_login(owner.user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    status, headers, mine = _get(nginx_port, url, Cookie=cookie)
    assert status == 200 and headers["x-cache-status"] == "BYPASS" and b"pending-model" in mine
    status, headers, _ = _get(nginx_port, url, Authorization="Token not-a-real-token")
    assert headers["x-cache-status"] == "BYPASS"
    status, headers, body = _get(nginx_port, url)
    assert headers["x-cache-status"] == "HIT" and b"pending-model" not in body  # the owner's answer was not stored

    # A task visitors may not read: 404, never stored.
    hidden = make_task(owner, visibility="invite_only")
    for _ in range(2):
        status, headers, _ = _get(nginx_port, f"/api/v1/tasks/{hidden.id}/leaderboard")
        assert status == 404 and headers["x-cache-status"] != "HIT"

    # A new score reaches visitors once the 1 s copy expires (polled: at most ~1 s plus one refresh).
    _score(task, vendor.organization, "newer-model", released=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, headers, body = _get(nginx_port, url)
        if b"newer-model" in body:
            break
        time.sleep(0.2)
    assert status == 200 and b"newer-model" in body and b"pending-model" not in body
