"""The production stack of compose.yaml, for real: the offline-built image, PostgreSQL, Redis,
the hub (gunicorn), worker, beat and one site agent; a vendor's submission goes through it to a
score, then the stack is torn down. Needs Docker and docker-compose (CI installs both). The image
build is cached by content (first build: minutes); a run: about 2-3 minutes."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def stack(tmp_path):
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
    sys.path.insert(0, str(ROOT / "deploy/images"))
    from build import ensure_stack_image

    from sandbox_images.build import ensure_runner_image

    ensure_stack_image()
    site_dir = Path("/var/tmp") / f"vaultbench-compose-{uuid.uuid4().hex[:8]}"
    site_dir.mkdir(mode=0o755)
    project = f"vbtest{uuid.uuid4().hex[:8]}"
    port = _free_port()
    env = {**os.environ, "VAULTBENCH_SECRET_KEY": secrets.token_urlsafe(50), "VAULTBENCH_PORT": str(port),
           "VAULTBENCH_SITE_DIR": str(site_dir), "VAULTBENCH_RUNNER_IMAGE": ensure_runner_image(),
           "VAULTBENCH_METRICS_TOKEN": "test-metrics", "VAULTBENCH_DB_PASSWORD": secrets.token_hex(12)}  # fmt: skip

    def compose(*argv, check=True, timeout=600, capture=False):
        return subprocess.run(["docker-compose", "-p", project, "-f", str(ROOT / "compose.yaml"), *argv], env=env,
                              check=check, timeout=timeout, text=True, capture_output=capture)  # fmt: skip

    try:
        yield compose, f"http://127.0.0.1:{port}", site_dir
    finally:
        logs = compose("logs", "--no-color", "--tail", "40", check=False, capture=True)
        print(logs.stdout[-20000:])
        compose("down", "-v", "--remove-orphans", check=False)
        shutil.rmtree(site_dir, ignore_errors=True)


def _wait_ready(hub: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{hub}/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(2)
    raise AssertionError(f"{hub}/readyz never answered 200")


def test_a_submission_goes_through_the_compose_stack(stack, tmp_path):
    compose, hub, site_dir = stack
    compose("up", "-d", "db", "redis", "hub", "worker", "beat")
    _wait_ready(hub)
    compose("exec", "-T", "hub", "vaultbench-hub", "demo_seed", "--out", "/tmp/seed.json")
    seed = json.loads(compose("exec", "-T", "hub", "cat", "/tmp/seed.json", capture=True).stdout)
    task_id, site, vendor = seed["task_id"], seed["sites"][0], seed["vendors"][0]

    # The site: its token, its config, its rows (checked against the hub's schema), its agent.
    sys.path.insert(0, str(ROOT / "docs/examples"))
    import numpy as np
    from _common import load_split

    _, _, features, labels = load_split()
    np.save(site_dir / "features.npy", features[:40])
    np.save(site_dir / "labels.npy", labels[:40])
    (site_dir / "site-token").write_text(site["token"])
    (site_dir / "site.toml").write_text(
        'hub_url = "http://hub:8000"\nallow_insecure_http = true  # the compose network\n'
        'site_token_file = "site-token"\ndata_dir = "data"\npoll_interval_seconds = 2\n'
    )
    compose("run", "--rm", "-T", "agent", "vaultbench-site", "register-data", "--config", str(site_dir / "site.toml"),
            "--task", str(task_id), "--features", str(site_dir / "features.npy"),
            "--labels", str(site_dir / "labels.npy"))  # fmt: skip
    compose("up", "-d", "agent")

    # The vendor, from outside, with the CLI.
    model = tmp_path / "model.joblib"
    subprocess.run([sys.executable, str(ROOT / "docs/examples/make_sklearn_model.py"), str(model)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    submitted = subprocess.run(
        [sys.executable, "-m", "marketplace.vendor_cli", "--hub", hub, "--json", "submit", str(model), "--task",
         str(task_id), "--format", "sklearn", "--name", "through compose", "--wait", "--timeout", "420"],
        cwd=ROOT, env={**os.environ, "VAULTBENCH_TOKEN": vendor["token"]}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    result = json.loads(submitted.stdout)
    assert result["status"] == "scored" and set(result["metrics"]) == {"accuracy", "roc_auc"}

    metrics = requests.get(f"{hub}/metrics", headers={"Authorization": "Bearer test-metrics"}, timeout=10).text
    assert 'vaultbench_jobs{kind="evaluate",status="succeeded"} 1.0' in metrics
    assert f'site="{site["name"]}"' in metrics  # the agent's heartbeat reached the hub
    assert requests.get(f"{hub}/metrics", timeout=10).status_code == 403  # not loopback from the stack's view
