"""The vendor's install path: the project builds as a wheel, ``vaultbench[vendor]`` installs alone
into a clean virtualenv from local wheels only (no index), and its CLI and SDK work against a live
hub without Django. Costs about 20-40 s (a wheel build, a venv, a pip install)."""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from marketplace.accounts.services import personal_token_create
from marketplace.submissions.models import Submission
from sandbox_images.build import ensure_wheelhouse
from tests.conftest import make_task, register_shard, sklearn_like_artifact

# One wheel + virtualenv per module (vendor_env): its tests stay on one xdist worker.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.xdist_group("vendor_wheel")]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vendor_env(tmp_path_factory):
    """A clean virtualenv holding the built wheel with its vendor extra, installed offline."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("marketplace", "evaluator", "sandbox_images"):
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    dist = work / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--disable-pip-version-check", "-q", "-w", str(dist), str(src)], check=True, timeout=600)  # fmt: skip
    (wheel,) = dist.glob("vaultbench-*.whl")
    wheelhouse = ensure_wheelhouse(requirements=ROOT / "deploy/requirements/vendor.txt")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True, clear=True)
    subprocess.run([str(env_dir / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-index", "--find-links", str(dist), "--find-links", str(wheelhouse),
                    f"vaultbench[vendor] @ {wheel.as_uri()}"], check=True, timeout=600)  # fmt: skip
    return env_dir


def _run(env_dir, *argv, token, hub):
    environment = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "VAULTBENCH_TOKEN": token, "VAULTBENCH_HUB_URL": hub}
    return subprocess.run(list(argv), capture_output=True, text=True, env=environment, timeout=120, cwd="/")


def test_the_vendor_extra_installs_requests_alone(vendor_env):
    frozen = subprocess.run([str(vendor_env / "bin/python"), "-m", "pip", "freeze", "--all"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    names = {line.split("==")[0].split(" @ ")[0].lower() for line in frozen.splitlines() if line}
    assert names - {"pip", "setuptools"} == {"vaultbench", "requests", "certifi", "charset-normalizer", "idna", "urllib3"}


def test_installed_cli_and_sdk_work_against_a_live_hub(vendor_env, live_server, owner, vendor, site, tmp_path):
    task = make_task(owner)
    register_shard(site, task)
    _, token = personal_token_create(user=vendor.user, name="wheel")
    artifact = tmp_path / "model.joblib"
    artifact.write_bytes(sklearn_like_artifact().getvalue())
    listing = _run(vendor_env, "vaultbench", "--json", "tasks", token=token, hub=live_server.url)
    assert listing.returncode == 0, listing.stderr
    assert [t["id"] for t in json.loads(listing.stdout)] == [task.id]
    submitted = _run(vendor_env, "vaultbench", "submit", str(artifact), "--task", str(task.id), "--format",
                     "sklearn", "--name", "from the wheel", token=token, hub=live_server.url)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    submission = Submission.objects.get(name="from the wheel")
    script = (
        "import os, sys, json\n"
        "assert 'django' not in sys.modules\n"
        "from marketplace.client import Client\n"
        "c = Client(os.environ['VAULTBENCH_HUB_URL'], os.environ['VAULTBENCH_TOKEN'])\n"
        f"print(json.dumps([c.status({submission.id})['status'], len(c.leaderboard({task.id})['results'])]))\n"
        "import importlib.util; assert importlib.util.find_spec('django') is None\n"
    )
    sdk = _run(vendor_env, "python", "-c", script, token=token, hub=live_server.url)
    assert sdk.returncode == 0, sdk.stderr
    assert json.loads(sdk.stdout) == ["pending", 0]
    assert os.path.exists(vendor_env / "bin/vaultbench-site")  # scripts install; their extras do not
