"""What the evaluation benchmarks share: a real hub on loopback, its people, the data and models.

Used by ``job_overhead.py`` (one job end to end) and ``eval_throughput.py`` (many jobs over
several sites); ``federated_common.py`` and ``attacks/live.py`` take the hub helpers too (through
``job_overhead``, which re-exports them).
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "docs" / "examples"))

from _common import load_split  # noqa: E402

from evaluator import sandbox  # noqa: E402

N_FEATURES = 30


# --- hub ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hub_env(var_dir: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VAULTBENCH_", "DATABASE_URL", "CELERY_"))
    }
    env.update(
        VAULTBENCH_VAR_DIR=str(var_dir),
        CELERY_TASK_ALWAYS_EAGER="true",  # no worker: checks and aggregation run in the request
        DJANGO_DEBUG="false",
        DJANGO_SETTINGS_MODULE="marketplace.settings",
        VAULTBENCH_LEASE_SECONDS="300",
    )
    return env


@contextlib.contextmanager
def running_hub(env: dict[str, str], port: int, log_path: Path):
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "marketplace.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--threads", "4", "--timeout", "600"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(120):
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{url}/api/v1/tasks", timeout=2).status_code < 500:
                        break
                if proc.poll() is not None:
                    raise SystemExit(f"gunicorn exited; see {log_path}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            proc.wait(30)


def seed_people(env: dict[str, str], n_sites: int) -> dict[str, Any]:
    """Owner, vendor, their organizations, a vendor token and ``n_sites`` sites, written straight
    to the hub's database (Django set up in this process)."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from marketplace.accounts.services import organization_create, personal_token_create
    from marketplace.sites.services import site_create

    users = get_user_model().objects
    owner = users.create_user(username="owner", password="bench-owner-pw-1")
    vendor = users.create_user(username="vendor", password="bench-vendor-pw-1")
    owner_org = organization_create(name="Bench Hospital", kind="data_owner", creator=owner)
    organization_create(name="Bench Vendor", kind="vendor", creator=vendor)
    _, vendor_token = personal_token_create(user=vendor, name="bench")
    names = ["bench-site"] if n_sites == 1 else [f"site-{i}" for i in range(n_sites)]
    site_tokens = [site_create(organization=owner_org, name=name, actor=owner)[1] for name in names]
    return {"owner": owner, "owner_org": owner_org, "vendor_token": vendor_token, "site_tokens": site_tokens}


def open_task(people: dict[str, Any], *, title: str, quota: int, limits: dict[str, Any], **extra: Any) -> int:
    """One open binary task with the breast-cancer schema; its id."""
    from marketplace.catalog.services import task_create, task_open

    spec = {
        "title": title,
        "description": "Synthetic rows with the breast-cancer schema.",
        "task_type": "binary_classification",
        "input_spec": {"n_features": N_FEATURES, "dtype": "float32", "n_classes": 2},
        "metrics": [{"name": "roc_auc", "decimals": 4}, {"name": "accuracy", "decimals": 3}],
        "primary_metric": "roc_auc",
        "min_test_rows": 10,
        "quota_per_day": quota,
        "resource_limits": limits,
        **extra,
    }
    task = task_create(organization=people["owner_org"], actor=people["owner"], spec=spec)
    return task_open(task=task, actor=people["owner"]).id


def close_db() -> None:
    from django.db import connections

    connections.close_all()


# --- data and model -----------------------------------------------------------------------------


def synthetic_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    _, _, features, labels = load_split()  # the held-out rows: the model never saw them
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(labels), size=n)
    noise = rng.normal(size=(n, features.shape[1])).astype(np.float32) * (0.01 * features.std(axis=0))
    return (features[pick] + noise).astype(np.float32), labels[pick].astype(np.int64)


def build_model(out: Path) -> Path:
    artifact = out / "model.joblib"
    subprocess.run(
        [sys.executable, str(REPO / "docs/examples/make_sklearn_model.py"), str(artifact)],
        cwd=REPO / "docs/examples", check=True, capture_output=True,
    )  # fmt: skip
    return artifact


def build_torchscript_model(out: Path) -> Path:
    artifact = out / "model.pt"
    subprocess.run(
        [sys.executable, str(REPO / "docs/examples/make_torchscript_model.py"), str(artifact)],
        cwd=REPO / "docs/examples", check=True, capture_output=True,
    )  # fmt: skip
    return artifact


def upload(url: str, token: str, task_id: int, artifact: Path, name: str, model_format: str = "sklearn") -> int:
    with artifact.open("rb") as fh:
        resp = requests.post(
            f"{url}/api/v1/submissions",
            headers={"Authorization": f"Bearer {token}"},
            data={"task": task_id, "name": name, "artifact_format": model_format},
            files={"artifact": (artifact.name, fh)},
            timeout=120,
        )
    resp.raise_for_status()
    return int(resp.json()["id"])


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    docker_version = ""
    with contextlib.suppress(Exception):
        docker_version = sandbox.get_client().version().get("Version", "")
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    return {
        "cpus": os.cpu_count(), "cpu": cpu, "memory": mem, "python": platform.python_version(),
        "kernel": platform.release(), "docker": docker_version,
    }  # fmt: skip
