"""Evaluation throughput: many small jobs over several sites, with and without the warm pool.

    python benchmarks/eval_throughput.py [--submissions 50] [--sites 3] [--rows 1000]
        [--modes cold,pool,compiled] [--distinct-artifacts] [--pool-size 1] [--compare-plain-imports]
        [--json out.json]

Sets up, in a temporary folder, a hub (SQLite, migrated, gunicorn on loopback: real HTTP,
Celery tasks inline), one vendor, ``--sites`` sites of one data owner, one task whose shard
(``--rows`` synthetic breast-cancer rows, as in job_overhead.py) is registered at every site,
and the vendor's scikit-learn example. One real agent per site (evaluator.agent.Agent, real
HubClient, real runner image and hardened profile) runs in a thread of this process.

Modes: ``cold`` (pool_size = 0), ``pool`` (pool_size = 1, compile_models = false) and
``compiled`` (pool_size = 1, compile_models = true, the agent's defaults: after an artifact's
first job at a site, its later jobs there run the numpy-only form). Every submission uploads the
same model bytes unless ``--distinct-artifacts``: then each has its own, no compiled form is
reused, and ``compiled`` measures what converting costs each job.

``--compare-plain-imports``: each mode runs twice, first as ``<mode>, plain imports`` in a copy of
the runner image whose ``python -m runner`` does not install the lighter imports
(``evaluator/runner/light_imports.py``), then as ``<mode>`` in the image itself: the before/after
of that change in one run.

Per mode (same run, same machine, one after the other): a warm-up submission (one job per site;
in pool mode it also makes each agent's pool start a container of that key), then the agents are
paused, ``--submissions`` submissions are uploaded (``--sites`` jobs each), and the agents are
released. The window runs from the release to the last job's result; jobs/min = jobs / window.

CPU per job = (sandbox containers + agents + hub workers) CPU in the window / jobs:
- containers: every sandbox container (pooled or cold) is created under one cgroup parent for
  the run (a benchmark-side wrapper adds ``cgroup_parent`` to ``containers.create``; cgroup v1
  cpuacct or v2 cpu.stat), so containers removed during the window still count;
- agents: this process's own CPU (``resource.getrusage``) minus its main thread's (which only
  polls the hub's database for finished jobs meanwhile);
- hub: the gunicorn master and workers (``/proc/<pid>/stat``);
- the engine (dockerd, containerd) is reported beside, not in the sum: other users of the engine
  on a shared machine show up in it; the per-container shims are not measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from eval_common import (  # noqa: E402
    N_FEATURES,
    build_model,
    close_db,
    free_port,
    hub_env,
    machine,
    open_task,
    running_hub,
    seed_people,
    synthetic_rows,
    upload,
)

from evaluator import datasets, sandbox  # noqa: E402
from evaluator.agent import Agent  # noqa: E402
from evaluator.client import HubClient  # noqa: E402
from evaluator.config import load_config  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- CPU accounting (benchmark only) -----------------------------------------------------------


class ContainerCgroup:
    """One cgroup parent for every sandbox container of the run (cgroupfs driver)."""

    def __init__(self) -> None:
        self.name = f"vbbench-{uuid.uuid4().hex[:12]}"

    def wrap(self, client):
        create_container = client.api.create_container  # what containers.create ends in

        def under_parent(*args, **kwargs):
            kwargs["host_config"] = {**(kwargs.get("host_config") or {}), "CgroupParent": f"/{self.name}"}
            return create_container(*args, **kwargs)

        client.api.create_container = under_parent
        return client

    def cpu_seconds(self) -> float:
        v1 = Path("/sys/fs/cgroup/cpuacct") / self.name / "cpuacct.usage"
        if v1.exists():
            return int(v1.read_text()) / 1e9
        v2 = Path("/sys/fs/cgroup") / self.name / "cpu.stat"
        if v2.exists():
            for line in v2.read_text().splitlines():
                if line.startswith("usage_usec"):
                    return int(line.split()[1]) / 1e6
        return 0.0

    def remove(self) -> None:
        for controller in Path("/sys/fs/cgroup").iterdir():
            with contextlib.suppress(OSError):
                (controller / self.name).rmdir()
        with contextlib.suppress(OSError):
            (Path("/sys/fs/cgroup") / self.name).rmdir()


def process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def engine_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in ("dockerd", "containerd"):
                    pids.append(int(entry.name))
    return pids


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- hub ---------------------------------------------------------------------------------------


def seed_hub(env: dict[str, str], n_sites: int) -> dict:
    people = seed_people(env, n_sites)
    task = open_task(
        people, title="Breast cancer, throughput", quota=10000,
        limits={"memory_mb": 1024, "cpus": 1.0, "timeout_seconds": 600, "max_output_mb": 16},
        dp_epsilon_per_release=0.05,  # a budget that lasts for a few hundred releases
    )  # fmt: skip
    close_db()
    return {"vendor_token": people["vendor_token"], "site_tokens": people["site_tokens"], "task": task}


def distinct_models(root: Path, n: int) -> list[Path]:
    """``n`` scikit-learn pipelines of the example's kind, each with other coefficients (other
    bytes, so no job can reuse another's compiled form)."""
    import joblib
    from _common import load_split
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, _, _ = load_split()
    paths = []
    for i in range(n):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 + i / 100, max_iter=1000)).fit(x, y)
        paths.append(root / f"model-{i}.joblib")
        joblib.dump(model, paths[-1])
    return paths


def finished_jobs(submission_ids: list[int]) -> int:
    from django.db import connections

    from marketplace.jobs.models import Job

    try:
        return Job.objects.filter(submission_id__in=submission_ids, finished_at__isnull=False).count()
    finally:
        connections.close_all()


def job_outcomes(submission_ids: list[int]) -> dict[str, int]:
    from collections import Counter

    from django.db import connections

    from marketplace.jobs.models import Job

    try:
        jobs = Job.objects.filter(submission_id__in=submission_ids)
        return dict(Counter(f"{j.status}:{j.failure_reason}" if j.failure_reason else j.status for j in jobs))
    finally:
        connections.close_all()


# --- agents ------------------------------------------------------------------------------------


class AgentThread:
    """One site's agent, driven by ``run_once`` while ``go`` is set (paused otherwise)."""

    def __init__(self, agent: Agent, go: threading.Event, stop: threading.Event) -> None:
        self.agent = agent
        self.go = go
        self.stop = stop
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.errors = 0

    def _run(self) -> None:
        while not self.stop.is_set():
            if not self.go.wait(0.05):
                continue
            try:
                worked = self.agent.run_once()
            except Exception as exc:  # the hub busy: note it and go on, like run_forever
                self.errors += 1
                print(f"agent error: {exc}", file=sys.stderr)
                worked = False
            if not worked:
                time.sleep(0.5)  # the queue is empty (the end of the window): poll gently


def make_agents(
    root: Path, url: str, seed: dict, image: str, features: Path, labels: Path, mode: str, pool_size: int = 1,
    label: str = "",
) -> list[Agent]:  # fmt: skip
    agents = []
    for i, token in enumerate(seed["site_tokens"]):
        site = root / f"{label or mode}-site-{i}"
        site.mkdir()
        (site / "site-token").write_text(token)
        (site / "site.toml").write_text(
            f'hub_url = "{url}"\nsite_token_file = "site-token"\ndata_dir = "data"\nimage = "{image}"\n'
            f"pool_size = {0 if mode == 'cold' else pool_size}\ncompile_models = {'true' if mode == 'compiled' else 'false'}\n"
            "\n[limits]\nmax_memory_mb = 4096\nmax_cpus = 1.0\nmax_timeout_seconds = 1800\n"
            "max_epsilon_per_release = 2.0\nmax_vendor_epsilon = 1000\nmax_task_epsilon = 1000\n"
        )
        config = load_config(site / "site.toml", env={})
        client = HubClient.from_config(config)
        meta = datasets.register_task_data(
            data_dir=config.data_dir, task_id=seed["task"], features_path=features, labels_path=labels,
            input_spec={"n_features": N_FEATURES, "n_classes": 2, "task_type": "binary_classification"},
        )  # fmt: skip
        client.register_shard(
            task_id=seed["task"], row_count=meta["row_count"], fingerprint=meta["fingerprint"],
            split_sizes=meta["split_sizes"],
        )  # fmt: skip
        agent = Agent(config, client)
        agent.start_pool()  # the fast paths as run_forever starts them (pool only with pool_size > 0)
        agents.append(agent)
    return agents


def wait_until(predicate, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


def run_mode(mode: str, *, url: str, seed: dict, root: Path, image: str, artifacts: list[Path], features: Path,
             labels: Path, n_submissions: int, cgroup: ContainerCgroup, hub_pid: int, pool_size: int = 1,
             label: str = "") -> dict:  # fmt: skip
    """``label``: names this run's site folders and submissions (default: the mode)."""
    label = label or mode
    go, stop = threading.Event(), threading.Event()
    agents = make_agents(root, url, seed, image, features, labels, mode, pool_size, label)
    threads = [AgentThread(a, go, stop) for a in agents]
    for t in threads:
        t.thread.start()
    n_sites = len(agents)
    try:
        go.set()  # warm-up: one job per site (the pool learns its key and starts a container)
        warm = [upload(url, seed["vendor_token"], seed["task"], artifacts[-1], f"{label}-warm-up")]
        wait_until(lambda: finished_jobs(warm) == n_sites, 600, "the warm-up jobs")
        go.clear()
        time.sleep(1.0)  # agents finish the loop they were in
        ids = [
            upload(url, seed["vendor_token"], seed["task"], artifacts[i % len(artifacts)], f"{label}-{i}")
            for i in range(n_submissions)
        ]
        if mode != "cold":
            wait_until(lambda: all(a._pool.wait_warm(1) for a in agents), 300, "warm pools")
        time.sleep(1.0)
        hub_before = sum(process_cpu(p) for p in process_tree(hub_pid))
        engine_before = sum(process_cpu(p) for p in engine_pids())
        containers_before, agents_before, main_before = cgroup.cpu_seconds(), self_cpu(), time.thread_time()
        started = time.monotonic()
        go.set()
        n_jobs = n_submissions * n_sites
        wait_until(lambda: finished_jobs(ids) >= n_jobs, 3600, "the jobs", every=0.5)
        window = time.monotonic() - started
        containers = cgroup.cpu_seconds() - containers_before
        # This process minus its main thread (which only polls the hub's database meanwhile).
        agents_cpu = self_cpu() - agents_before - (time.thread_time() - main_before)
        hub = sum(process_cpu(p) for p in process_tree(hub_pid)) - hub_before
        engine = sum(process_cpu(p) for p in engine_pids()) - engine_before
        go.clear()
        outcomes = job_outcomes(ids)
    finally:
        stop.set()
        for t in threads:
            t.thread.join(30)
        for a in agents:
            a.close_pool()
    total = containers + agents_cpu + hub
    return {
        "jobs": n_jobs,
        "window_seconds": window,
        "jobs_per_minute": n_jobs / window * 60,
        "cpu_seconds": {"containers": containers, "agents": agents_cpu, "hub": hub, "engine (beside)": engine},
        "cpu_per_job": total / n_jobs,
        "outcomes": outcomes,
        "agent_errors": sum(t.errors for t in threads),
    }


# `python -m runner` as it was before evaluator/runner/light_imports.py (the baseline's entry point).
PLAIN_MAIN = """import os
import sys

from .cli import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""


def plain_imports_image(image: str, root: Path) -> str:
    """The runner image with the plain ``__main__.py``: everything else the same layers."""
    context = root / "plain-imports-image"
    context.mkdir()
    (context / "__main__.py").write_text(PLAIN_MAIN)
    (context / "Dockerfile").write_text(
        f"FROM {image}\nUSER root\nCOPY __main__.py /opt/vaultbench/runner/__main__.py\n"
        "RUN python3 -m compileall -q /opt/vaultbench/runner\nUSER 65534:65534\n"
    )
    ref = f"vb-bench-plain-imports:{image.rsplit(':', 1)[-1]}"
    subprocess.run(["docker", "build", "-q", "--network", "none", "-t", ref, str(context)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return ref


def report(results: dict) -> str:
    lines = [
        "| mode | jobs | window | jobs/min | CPU-s per job (containers + agents + hub) | containers | agents | hub "
        "| engine (dockerd + containerd, beside) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, r in results["modes"].items():
        cpu, n = r["cpu_seconds"], r["jobs"]
        lines.append(
            f"| {mode} | {n} | {r['window_seconds']:.1f} s | **{r['jobs_per_minute']:.0f}** | **{r['cpu_per_job']:.2f}** "
            f"| {cpu['containers'] / n:.2f} | {cpu['agents'] / n:.2f} | {cpu['hub'] / n:.2f} "
            f"| {cpu['engine (beside)'] / n:.2f} |"
        )
    lines.append("")
    for mode, r in results["modes"].items():
        lines.append(f"{mode}: job outcomes {r['outcomes']}, agent loop errors {r['agent_errors']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=50)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--modes", default="cold,pool,compiled")
    parser.add_argument("--pool-size", type=int, default=1, help="pool_size of every agent in the pool modes")
    parser.add_argument(
        "--distinct-artifacts", action="store_true",
        help="every submission its own model bytes (the warm-up's too): no compiled form is ever reused",
    )  # fmt: skip
    parser.add_argument(
        "--compare-plain-imports", action="store_true",
        help="run each mode first in a copy of the runner image without the lighter imports (the baseline)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    from sandbox_images.build import ensure_runner_image

    image = ensure_runner_image()
    root = Path(tempfile.mkdtemp(prefix="vb-throughput-"))
    print(f"work folder: {root}", file=sys.stderr)
    cgroup = ContainerCgroup()
    original_get_client = sandbox.get_client
    sandbox.get_client = lambda: cgroup.wrap(original_get_client())  # every sandbox under one parent
    try:
        env = hub_env(root / "hub")
        (root / "hub").mkdir()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True)
        seed = seed_hub(env, args.sites)
        artifacts = distinct_models(root, args.submissions + 1) if args.distinct_artifacts else [build_model(root)]
        features, labels = synthetic_rows(args.rows, seed=0)
        np.save(root / "features.npy", features)
        np.save(root / "labels.npy", labels)
        port = free_port()
        results: dict = {"modes": {}}
        with running_hub(env, port, root / "gunicorn.log") as url:
            hub_pid = next(
                int(p.name) for p in Path("/proc").iterdir()
                if p.name.isdigit() and f"127.0.0.1:{port}".encode() in (p / "cmdline").read_bytes()
                and b"gunicorn" in (p / "cmdline").read_bytes()
                and process_tree(int(p.name))[1:]  # the master: it has the workers as children
            )  # fmt: skip
            images = []  # (name suffix, image): the baseline first
            if args.compare_plain_imports:
                images.append((", plain imports", plain_imports_image(image, root)))
            images.append(("", image))
            for mode in [m for m in args.modes.split(",") if m]:
                for suffix, mode_image in images:
                    results["modes"][mode + suffix] = run_mode(
                        mode, url=url, seed=seed, root=root, image=mode_image, artifacts=artifacts,
                        features=root / "features.npy", labels=root / "labels.npy",
                        n_submissions=args.submissions, cgroup=cgroup, hub_pid=hub_pid, pool_size=args.pool_size,
                        label=mode + ("-plain" if suffix else ""),
                    )  # fmt: skip
                    print(json.dumps({mode + suffix: results["modes"][mode + suffix]}), file=sys.stderr)
        results["machine"] = machine()
        results["command"] = " ".join([Path(sys.executable).name, *sys.argv])
        print(report(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        sandbox.get_client = original_get_client
        cgroup.remove()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
