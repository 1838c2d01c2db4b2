"""Real headless Chromium (Debian's, driven by Python Playwright), a live hub, real site agents.

Without Chromium or a Docker engine these tests skip on a laptop and FAIL in CI (CI=true): a
browser suite that silently skips proves nothing. `.ci/lib/chromium.sh` installs Chromium.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; the ORM calls of the test body are
# still plain synchronous calls, which Django would otherwise refuse next to a running loop.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
SCREENSHOTS = ROOT / "docs" / "screenshots"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(message: str) -> None:
    if _in_ci():
        pytest.fail(f"{message} (CI is set: the browser suite must not skip)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing (run .ci/lib/chromium.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser, live_server):
    """new_page() -> a page in its own browser context (its own cookies: one person each)."""
    contexts = []

    def make():
        context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True,
                                      base_url=live_server.url)  # fmt: skip
        context.set_default_timeout(20_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def runner_image():
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        _unavailable(f"Docker engine unreachable: {exc}")
    from sandbox_images.build import ensure_runner_image

    return ensure_runner_image()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


class Agents:
    """Site agents as real subprocesses (`python -m evaluator`), each with its private shard."""

    def __init__(self, root: Path, hub_url: str, image: str):
        self.root, self.hub_url, self.image = root, hub_url, image
        self.processes: list[subprocess.Popen] = []

    def configure(self, name: str, token: str) -> Path:
        site = self.root / name
        site.mkdir(parents=True)
        token_file = site / "site-token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        config = site / "site.toml"
        config.write_text(
            f'hub_url = "{self.hub_url}"\nsite_token_file = "{token_file}"\ndata_dir = "{site / "data"}"\n'
            f'image = "{self.image}"\npoll_interval_seconds = 1\n'
            "\n[limits]\nmax_memory_mb = 2048\nmax_cpus = 1.0\nmax_timeout_seconds = 600\n"
        )
        return config

    def register(self, config: Path, task_id: int, features, labels) -> None:
        import numpy as np

        features_path, labels_path = config.parent / "features.npy", config.parent / "labels.npy"
        np.save(features_path, features)
        np.save(labels_path, labels)
        subprocess.run(
            [sys.executable, "-m", "evaluator", "register-data", "--config", str(config), "--task", str(task_id),
             "--features", str(features_path), "--labels", str(labels_path), "--n-features", str(features.shape[1]),
             "--task-type", "binary_classification"],
            cwd=ROOT, check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def start(self, config: Path) -> None:
        log = open(config.parent / "agent.log", "wb")  # noqa: SIM115 (closed with the process)
        self.processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "evaluator", "run", "--config", str(config)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        )

    def logs(self) -> str:
        return "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(self.root.glob("*/agent.log")))

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def agents(tmp_path, live_server, runner_image):
    agents = Agents(tmp_path / "sites", live_server.url, runner_image)
    yield agents
    agents.stop()


@pytest.fixture
def vendor_model(tmp_path) -> Path:
    out = tmp_path / "logreg.joblib"
    subprocess.run([sys.executable, str(ROOT / "docs/examples/make_sklearn_model.py"), str(out)], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    return out
