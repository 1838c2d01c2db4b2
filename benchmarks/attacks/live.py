"""A live deployment for the replay: a real hub over HTTP, real site agents (``python -m evaluator
run`` subprocesses), the real runner image.

Two ways to get the hub: ``live_deployment`` (the benchmark) starts gunicorn on loopback over a
fresh SQLite file (Celery inline) and seeds it with the hub's services; the pytest version
(tests/attacks) uses pytest-django's ``live_server`` and the suite's personas. Both then call
``seed_tasks`` and ``start_sites``, so the tasks, shards and agents are the same. The hub's
environment and gunicorn runner come from ``benchmarks/job_overhead.py``; the site folders and
agent subprocesses from ``tests/e2e/conftest.py``.

The replay reads the hub's own records (``hub_*`` below, through the ORM of the same database)
only to *count* what left (releases, charges, quota), never to decode: decoders see the vendor's
API alone (``vendor_view``, ``transcript``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
for _path in (REPO, REPO / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tests.e2e.conftest import AgentProcess, SiteDir  # noqa: E402

Shard = tuple[np.ndarray, np.ndarray]

BASE_SPEC: dict[str, Any] = {
    "description": "Attack replay: breast-cancer rows, 30 float features, binary labels.",
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
    """One task: its sites, spec overrides, and (optionally) the rows each site holds for it
    (default: the site's own shard). ``budget_releases`` / ``task_releases`` in ``overrides``
    become the vendor and task epsilons that admit exactly that many releases."""

    key: str
    sites: list[str]
    overrides: dict[str, Any] = field(default_factory=dict)
    shards: dict[str, Shard] | None = None


@dataclass
class SitePlan:
    """One site: how many agents serve it (they share its data folder, ledger and budget file),
    and extra ``[limits]`` lines of its config (e.g. its own privacy caps)."""

    name: str
    agents: int = 1
    limits: dict[str, float] = field(default_factory=dict)


@dataclass
class Deployment:
    url: str
    vendor_token: str
    task_ids: dict[str, int]
    sites: dict[str, SiteDir]
    agents: list[AgentProcess]
    root: Path


def epsilon_admitting(releases: int, *, epsilon: float, delta: float) -> float:
    """An epsilon cap that admits exactly ``releases`` releases of ``epsilon`` each (zCDP: the
    rhos add up, epsilons do not; half a release of slack against float sums)."""
    from evaluator.privacy.zcdp import epsilon_for_rho, rho_for_epsilon

    return epsilon_for_rho((releases + 0.5) * rho_for_epsilon(epsilon, delta), delta)


def task_spec(plan: TaskPlan, common: Mapping[str, Any]) -> dict[str, Any]:
    """The plan's spec in the hub's task fields: ``common`` (``--task-override``) first, the
    plan's own overrides on top; unknown fields dropped with a warning."""
    from marketplace.catalog.models import Task

    known = {f.name for f in Task._meta.get_fields()}
    spec: dict[str, Any] = {**BASE_SPEC, "title": f"Replay {plan.key}"}
    for name, value in common.items():
        if name in known:
            spec[name] = value
        else:
            print(f"task override {name!r}: no such task field on this hub, ignored", file=sys.stderr)
    spec.update(plan.overrides)
    epsilon = float(spec.get("dp_epsilon_per_release", 1.0))
    delta = float(spec.get("dp_delta", 1e-6))
    vendor = spec.pop("budget_releases", None)
    total = spec.pop("task_releases", None)
    if vendor is not None:
        spec["dp_vendor_epsilon"] = epsilon_admitting(vendor, epsilon=epsilon, delta=delta)
    if total is not None:
        spec["dp_task_epsilon"] = epsilon_admitting(total, epsilon=epsilon, delta=delta)
    elif vendor is not None:
        spec["dp_task_epsilon"] = max(float(spec.get("dp_task_epsilon", 20.0)), spec["dp_vendor_epsilon"])
    return spec


def seed_tasks(*, owner_user, owner_org, plans: list[TaskPlan], common: Mapping[str, Any]) -> dict[str, int]:
    """Creates and opens one task per plan with the hub's services; returns their ids."""
    from marketplace.catalog.services import task_create, task_open

    ids = {}
    for plan in plans:
        task = task_create(organization=owner_org, actor=owner_user, spec=task_spec(plan, common))
        ids[plan.key] = task_open(task=task, actor=owner_user).id
    return ids


def create_sites(*, owner_user, owner_org, names: list[str]) -> dict[str, str]:
    """The owner's sites on the hub: name -> site token."""
    from marketplace.sites.services import site_create

    return {name: site_create(organization=owner_org, name=name, actor=owner_user)[1] for name in names}


def start_sites(
    root: Path,
    *,
    url: str,
    image: str,
    site_tokens: Mapping[str, str],
    site_plans: list[SitePlan],
    task_ids: Mapping[str, int],
    plans: list[TaskPlan],
    shards: Mapping[str, Shard],
) -> tuple[dict[str, SiteDir], list[AgentProcess]]:
    """Writes each site's folder and config, registers every planned shard over HTTP, starts the
    agents. The caller closes the agents (``AgentProcess.close``)."""
    sites: dict[str, SiteDir] = {}
    for site_plan in site_plans:
        name = site_plan.name
        site_root = root / "sites" / name
        site_root.mkdir(parents=True, exist_ok=True)
        site = SiteDir(name=name, root=site_root, token=site_tokens[name], hub_url=url, image=image)
        site.write_config()
        if site_plan.limits:
            extra = "".join(f"{key} = {value!r}\n" for key, value in site_plan.limits.items())
            site.config_path.write_text(
                site.config_path.read_text().replace("[limits]\n", "[limits]\n" + extra, 1)
            )
        sites[name] = site
    for plan in plans:
        for name in plan.sites:
            features, labels = (plan.shards or {}).get(name) or shards[name]
            sites[name].register(task_ids[plan.key], features, labels)
    agents = []
    for site_plan in site_plans:
        for k in range(site_plan.agents):
            log = root / f"agent-{site_plan.name}-{k}.log"
            agents.append(AgentProcess(sites[site_plan.name], log).start())
    return sites, agents


@contextlib.contextmanager
def live_deployment(
    root: Path,
    *,
    shards: Mapping[str, Shard],
    site_plans: list[SitePlan],
    plans: list[TaskPlan],
    task_override: Mapping[str, Any] | None = None,
) -> Iterator[Deployment]:
    """Hub (gunicorn, fresh SQLite) up and seeded, shards registered, agents serving. This
    process's Django points at the same database (for the ``hub_*`` counts)."""
    from job_overhead import free_port, hub_env, running_hub

    from sandbox_images.build import ensure_runner_image

    image = ensure_runner_image()
    env = hub_env(root / "hub")
    (root / "hub").mkdir(parents=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True)
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connections

    from marketplace.accounts.services import organization_create, personal_token_create

    users = get_user_model().objects
    owner = users.create_user(username="owner", password="replay-owner-pw-1")
    vendor = users.create_user(username="mallory", password="replay-vendor-pw-1")
    owner_org = organization_create(name="Replay Hospitals", kind="data_owner", creator=owner)
    organization_create(name="Mallory Models", kind="vendor", creator=vendor)
    _, vendor_token = personal_token_create(user=vendor, name="replay")
    tokens = create_sites(owner_user=owner, owner_org=owner_org, names=[s.name for s in site_plans])
    task_ids = seed_tasks(owner_user=owner, owner_org=owner_org, plans=plans, common=task_override or {})
    connections.close_all()
    with running_hub(env, free_port(), root / "gunicorn.log") as url:
        sites, agents = start_sites(
            root, url=url, image=image, site_tokens=tokens, site_plans=site_plans,
            task_ids=task_ids, plans=plans, shards=shards,
        )  # fmt: skip
        try:
            yield Deployment(url, vendor_token, task_ids, sites, agents, root)
        finally:
            for agent in agents:
                agent.close()


# --- the hub's own records (counting only) ---------------------------------------------------


def _fresh() -> None:
    """Another process writes the database: drop this thread's connection, read afresh."""
    from django.db import connection

    if not connection.in_atomic_block:
        connection.close()


def hub_jobs(submission_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Per submission: its evaluation jobs (id, site, status, reason, started/finished)."""
    from marketplace.jobs.models import Job, JobKind

    _fresh()
    out: dict[int, list[dict[str, Any]]] = {sid: [] for sid in submission_ids}
    for job in Job.objects.filter(submission_id__in=submission_ids, kind=JobKind.EVALUATE).select_related(
        "site"
    ):
        out[job.submission_id].append(
            {"id": job.id, "site": job.site.name, "status": job.status, "reason": job.failure_reason,
             "started_at": job.started_at, "finished_at": job.finished_at}
        )  # fmt: skip
    return out


def hub_submissions(submission_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per submission, the truth the owner sees: status, reason, created_at, results_visible_at,
    updated_at."""
    from marketplace.submissions.models import Submission

    _fresh()
    return {
        s.id: {"status": s.status, "reason": s.status_reason, "created_at": s.created_at,
               "results_visible_at": s.results_visible_at, "updated_at": s.updated_at}
        for s in Submission.objects.filter(id__in=submission_ids)
    }  # fmt: skip


def hub_releases(task_id: int) -> dict[str, Any]:
    """What the hub recorded as released on a task: results (site releases), scored entries,
    privacy charges kept (not refunded) per vendor organization, rho spent per budget."""
    from marketplace.budgets.models import PrivacyBudget, PrivacyCharge
    from marketplace.jobs.models import Result
    from marketplace.leaderboard.models import LeaderboardEntry

    _fresh()
    charges: dict[int, int] = {}
    for charge in PrivacyCharge.objects.filter(task_id=task_id, split="public", refunded=False):
        charges[charge.vendor_id] = charges.get(charge.vendor_id, 0) + 1
    return {
        "results": Result.objects.filter(job__submission__task_id=task_id).count(),
        "scored": LeaderboardEntry.objects.filter(task_id=task_id).count(),
        "charges_by_vendor": charges,
        "charges": sum(charges.values()),
        "rho_spent": {
            (b.vendor_id if b.vendor_id is not None else "task"): b.rho_spent
            for b in PrivacyBudget.objects.filter(task_id=task_id, split="public")
        },
    }


def hub_quota_used(task_id: int, vendor_id: int) -> int:
    """The vendor's total quota counter on the task (the hub's record)."""
    from marketplace.submissions.models import QuotaCounter

    _fresh()
    row = QuotaCounter.objects.filter(task_id=task_id, vendor_id=vendor_id, day=None).first()
    return int(row.used) if row else 0


def site_releases(site: SiteDir, task_id: int) -> dict[str, Any]:
    """The site's record of truth: ledger releases of statistics on the task (public split), per
    vendor; failures posted; and the releases its budget file counts (spent + reserved rho)."""
    from evaluator.site_budget import SiteBudget

    entries = [e for e in site.ledger_entries() if str(e.task_id) == str(task_id)]
    releases = [e for e in entries if e.is_release_of_statistics and e.split == "public"]
    by_vendor: dict[str, int] = {}
    for entry in releases:
        by_vendor[str(entry.vendor_id)] = by_vendor.get(str(entry.vendor_id), 0) + 1
    usage = SiteBudget(site.config().budget_path).usage(task_id=task_id, split="public")
    rho = releases[0].rho if releases else None
    return {
        "releases": len(releases),
        "by_vendor": by_vendor,
        "failures": sum(1 for e in entries if e.kind == "failure"),
        "budget_rho_total": usage.total,
        "budget_releases": round(usage.total / rho, 6) if rho else 0.0,
    }
