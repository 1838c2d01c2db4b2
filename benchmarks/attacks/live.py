"""A live deployment for the replay: a real hub (gunicorn on loopback, SQLite, Celery inline),
real site agents (``python -m evaluator run`` subprocesses), the real runner image.

Plumbing is reused, not rewritten: the hub's environment and gunicorn runner come from
``benchmarks/job_overhead.py``; the site folders (config, token, private shard registration
over HTTP) and the agent subprocesses from ``tests/e2e/conftest.py``. Only the seeding (who
exists, which tasks) is the replay's own; it is done with the hub's services, as the tests do.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from job_overhead import free_port, hub_env, running_hub  # noqa: E402  (benchmarks/ is on sys.path)

from tests.e2e.conftest import AgentProcess, SiteDir  # noqa: E402

BASE_SPEC: dict[str, Any] = {
    "description": "Attack replay: breast-cancer-like rows, 30 float features, binary labels.",
    "task_type": "binary_classification",
    "input_spec": {"n_features": 30, "dtype": "float32", "n_classes": 2},
    "metrics": [{"name": "roc_auc", "decimals": 4}, {"name": "log_loss", "decimals": 4}],
    "primary_metric": "roc_auc",
    "min_test_rows": 10,
    "quota_per_day": 1000,
    "resource_limits": {"memory_mb": 512, "cpus": 1.0, "timeout_seconds": 60, "max_output_mb": 8},
}


@dataclass
class TaskPlan:
    key: str
    sites: list[str]
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Deployment:
    url: str
    vendor_token: str
    task_ids: dict[str, int]
    sites: dict[str, SiteDir]
    agents: list[AgentProcess]
    root: Path


def _task_spec(plan: TaskPlan, common: dict[str, Any]) -> dict[str, Any]:
    """The plan's spec in the fields this hub's Task has (the privacy fields are changing):
    ``budget_releases: k`` becomes a per-vendor budget of about k releases, in whichever form
    the hub knows (today a site leakage cap in bits; later a vendor epsilon); ``common``
    (``--task-override``) applies to every task, unknown fields dropped with a warning."""
    from marketplace.catalog.models import Task

    known = {f.name for f in Task._meta.get_fields()}
    spec = {**BASE_SPEC, "title": f"Replay {plan.key}", **plan.overrides}
    releases = spec.pop("budget_releases", None)
    if releases is not None:
        if "leakage_cap_bits" in known:
            per_release = sum(
                math.log2(10 ** m["decimals"] + 1) for m in spec["metrics"]
            )  # evaluator/ladder.py
            spec["leakage_cap_bits"] = (releases - 0.5) * per_release
        if "dp_vendor_epsilon" in known:
            spec["dp_vendor_epsilon"] = releases * float(spec.get("dp_epsilon_per_release", 1.0))
    for name, value in common.items():
        if name in known:
            spec[name] = value
        else:
            print(f"task override {name!r}: no such task field on this hub, ignored", file=sys.stderr)
    return spec


def _seed(
    env: dict[str, str], site_names: list[str], plans: list[TaskPlan], common: dict[str, Any]
) -> dict[str, Any]:
    """Owner, one vendor (with a personal token), the sites and the open tasks."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connections

    from marketplace.accounts.services import organization_create, personal_token_create
    from marketplace.catalog.services import task_create, task_open
    from marketplace.sites.services import site_create

    users = get_user_model().objects
    owner = users.create_user(username="owner", password="replay-owner-pw-1")
    vendor = users.create_user(username="mallory", password="replay-vendor-pw-1")
    owner_org = organization_create(name="Replay Hospitals", kind="data_owner", creator=owner)
    organization_create(name="Mallory Models", kind="vendor", creator=vendor)
    _, vendor_token = personal_token_create(user=vendor, name="replay")
    site_tokens = {
        name: site_create(organization=owner_org, name=name, actor=owner)[1] for name in site_names
    }
    task_ids = {}
    for plan in plans:
        spec = _task_spec(plan, common)
        task_ids[plan.key] = task_open(
            task=task_create(organization=owner_org, actor=owner, spec=spec), actor=owner
        ).id
    connections.close_all()
    return {"vendor_token": vendor_token, "site_tokens": site_tokens, "task_ids": task_ids}


@contextlib.contextmanager
def live_deployment(
    root: Path,
    *,
    shards: dict[str, tuple[np.ndarray, np.ndarray]],
    plans: list[TaskPlan],
    task_override: dict[str, Any] | None = None,
) -> Iterator[Deployment]:
    """Hub up, shards registered at their sites for each planned task, one agent per site."""
    from sandbox_images.build import ensure_runner_image

    image = ensure_runner_image()
    env = hub_env(root / "hub")
    (root / "hub").mkdir(parents=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True)
    seed = _seed(env, list(shards), plans, task_override or {})
    port = free_port()
    with running_hub(env, port, root / "gunicorn.log") as url:
        sites = {}
        for name, token in seed["site_tokens"].items():
            site_root = root / "sites" / name
            site_root.mkdir(parents=True)
            sites[name] = SiteDir(name=name, root=site_root, token=token, hub_url=url, image=image)
            sites[name].write_config()
        for plan in plans:
            for name in plan.sites:
                features, labels = shards[name]
                sites[name].register(seed["task_ids"][plan.key], features, labels)
        agents = [AgentProcess(site, root / f"agent-{name}.log").start() for name, site in sites.items()]
        try:
            yield Deployment(url, seed["vendor_token"], seed["task_ids"], sites, agents, root)
        finally:
            for agent in agents:
                agent.close()
