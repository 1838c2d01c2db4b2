"""A whole Vaultbench on loopback, made of real processes, for fault injection.

The hub is gunicorn (SQLite file, as in the embedded set-up), a Celery worker on the filesystem
broker, and a sweeper doing the beat's periodic work every second (tests/faults/sweeper.py). Each
site is a real ``python -m evaluator run`` agent with its own data folder, running real Docker
sandboxes. The vendor uploads over HTTP. The harness kills, restarts and breaks these processes
and folders (``faults``), and ``check()`` states the invariants:

1. every job and every submission ends in a terminal state within the deadline;
2. a succeeded job has exactly one result and one metrics receipt, a failed one none;
3. each site's ledger equals the hub's receipts for it, after the site's reconcile
   (``evaluator.ledger_reconcile``, whose repairs are counted): no entry missing, none counted
   twice, none the hub never got;
4. nothing is left behind: no sandbox container and no job folder of the world's sites.

Used by tests/faults/test_faults.py (a few faults of each family, in CI) and
benchmarks/fault_campaign.py (hundreds).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[2]
TERMINAL_JOBS = {"succeeded", "failed", "rejected"}
TERMINAL_SUBMISSIONS = {"scored", "failed", "rejected"}
N_ROWS, N_FEATURES = 60, 8
LEASE_SECONDS = 6
PREDICT = """
def predict(model, features):
    import numpy as np
    p = 1.0 / (1.0 + np.exp(-features[:, 0]))
    return np.stack([1 - p, p], axis=1).astype(np.float32)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("VAULTBENCH_", "DJANGO_", "PYTEST_")) and k not in ("DATABASE_URL", "CELERY_BROKER_URL")
    }  # fmt: skip
    env.update(extra)
    return env


@dataclass
class Proc:
    """One supervised child process (its own session, so a kill takes its children too)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)

    def stop(self) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
        if self.alive():
            self.kill(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Site:
    index: int
    name: str
    site_id: int
    token: str
    root: Path
    agent: Proc | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @property
    def features_file(self) -> Path:
        return self.data_dir / "tasks" / "TASK" / "features" / "features.npy"


@dataclass
class World:
    root: Path
    image: str
    n_sites: int = 2
    port: int = field(default_factory=free_port)
    sites: list[Site] = field(default_factory=list)
    procs: dict[str, Proc] = field(default_factory=dict)
    task_id: int = 0
    vendor_token: str = ""
    submissions: list[int] = field(default_factory=list)
    ledger_repairs: Counter = field(default_factory=Counter)

    # -- set-up ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def var(self) -> Path:
        return self.root / "var"

    @property
    def db_path(self) -> Path:
        return self.var / "hub.sqlite3"

    def hub_env(self) -> dict[str, str]:
        return _clean_env(
            VAULTBENCH_VAR_DIR=str(self.var), DJANGO_SETTINGS_MODULE="marketplace.settings",
            VAULTBENCH_LEASE_SECONDS=str(LEASE_SECONDS), VAULTBENCH_RECONCILE_STALE_SECONDS="3",
            VAULTBENCH_RETRY_DELAY_SECONDS="2",
        )  # fmt: skip

    def _run(self, *argv: str) -> None:
        subprocess.run([sys.executable, *argv], cwd=REPO, env=self.hub_env(), check=True, capture_output=True, timeout=300)

    def start(self) -> World:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        self.var.mkdir(parents=True, exist_ok=True)
        self._run("manage.py", "migrate", "-v", "0")
        seed_path = self.root / "seed.json"
        self._run("-m", "tests.faults.seed", str(seed_path), str(self.n_sites))
        seed = json.loads(seed_path.read_text())
        self.task_id, self.vendor_token = seed["task_id"], seed["vendor_token"]
        env = self.hub_env()
        python = sys.executable
        self.procs = {
            "web": Proc("web", [python, "-m", "gunicorn", "marketplace.wsgi", "--bind", f"127.0.0.1:{self.port}",
                                "--workers", "2", "--timeout", "60"], env, self.root / "logs" / "web.log"),
            "worker": Proc("worker", [python, "-m", "celery", "-A", "marketplace", "worker", "--pool", "solo",
                                      "--loglevel", "INFO"], env, self.root / "logs" / "worker.log"),
            "sweeper": Proc("sweeper", [python, "-m", "tests.faults.sweeper"], env, self.root / "logs" / "sweeper.log"),
        }  # fmt: skip
        for proc in self.procs.values():
            proc.start()
        self.wait_for_hub()
        for i, spec in enumerate(seed["sites"]):
            site = Site(i, spec["name"], spec["id"], spec["token"], self.root / "sites" / spec["name"])
            self._prepare_site(site)
            self.sites.append(site)
            self.start_agent(site)
        return self

    def wait_for_hub(self, timeout: float = 60) -> None:
        def up() -> bool:
            try:
                return requests.get(f"{self.url}/api/v1/tasks", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout=timeout, what="the hub to answer")

    def _prepare_site(self, site: Site) -> None:
        from evaluator.client import HubClient
        from evaluator.config import load_config
        from evaluator.datasets import register_task_data

        site.root.mkdir(parents=True)
        (site.root / "site-token").write_text(site.token)
        (site.root / "site-token").chmod(0o600)
        self.write_config(site)
        rng = np.random.default_rng(site.index)
        features = rng.normal(size=(N_ROWS, N_FEATURES)).astype(np.float32)
        labels = (features[:, 0] > 0).astype(np.int64)
        incoming = site.root / "incoming"
        incoming.mkdir()
        np.save(incoming / "features.npy", features)
        np.save(incoming / "labels.npy", labels)
        meta = register_task_data(
            data_dir=site.data_dir, task_id=self.task_id, features_path=incoming / "features.npy",
            labels_path=incoming / "labels.npy",
            input_spec={"n_features": N_FEATURES, "n_classes": 2, "task_type": "binary_classification"},
        )  # fmt: skip
        HubClient.from_config(load_config(site.root / "site.toml", env={})).register_shard(
            task_id=self.task_id, row_count=meta["row_count"], fingerprint=meta["fingerprint"],
            split_sizes=meta["split_sizes"],
        )  # fmt: skip

    def write_config(self, site: Site, *, min_free_disk_mb: int = 64) -> None:
        (site.root / "site.toml").write_text(
            f'hub_url = "{self.url}"\nsite_token_file = "site-token"\ndata_dir = "data"\n'
            f'image = "{self.image}"\npoll_interval_seconds = 0.5\nmin_free_disk_mb = {min_free_disk_mb}\n'
            "\n[limits]\nmax_memory_mb = 2048\nmax_cpus = 1.0\nmax_timeout_seconds = 600\n"
            "max_vendor_epsilon = 400.0\nmax_task_epsilon = 800.0\n"
            "\n[retry]\nmax_attempts = 3\nbackoff_base_seconds = 0.2\nbackoff_max_seconds = 2\n"
        )

    def features_path(self, site: Site) -> Path:
        return site.data_dir / "tasks" / str(self.task_id) / "features" / "features.npy"

    # -- agents ---------------------------------------------------------------------------------

    def start_agent(self, site: Site, *, failpoints: str = "", clock_offset: str = "") -> Proc:
        argv = [sys.executable, "-m", "evaluator", "run", "--config", str(site.root / "site.toml")]
        if clock_offset:
            argv = ["faketime", "-f", clock_offset, *argv]
        env = _clean_env(**({"VAULTBENCH_FAILPOINTS": failpoints} if failpoints else {}))
        # Cold sandboxes only: the leak check counts every container and folder, and a SIGKILLed
        # agent's warm pool is swept by the next agent, not by the kill (tests/sandbox/test_pool.py).
        env["VAULTBENCH_POOL_SIZE"] = "0"
        if clock_offset:
            # The wall clock is off (what a wrong system clock is); the monotonic clock is not, as
            # on a real machine (libfaketime faking it too would break every timed wait instead).
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        n = site.agent.starts if site.agent else 0
        site.agent = Proc(f"agent-{site.name}", argv, env, self.root / "logs" / f"agent-{site.name}.log")
        site.agent.starts = n
        return site.agent.start()

    def restart_agent(self, site: Site, **kwargs: str) -> Proc:
        if site.agent is not None:
            site.agent.stop()
        return self.start_agent(site, **kwargs)

    def stop(self) -> None:
        for site in self.sites:
            if site.agent is not None:
                site.agent.stop()
        for proc in self.procs.values():
            proc.stop()
        self.remove_containers()

    def supervise(self) -> list[str]:
        """What a supervisor (the demo's loop, compose's restart policy) does: restart the hub's
        processes and the agents that died. Returns the names it restarted."""
        restarted = []
        for name, proc in self.procs.items():
            if not proc.alive():
                proc.start()
                restarted.append(name)
        if "web" in restarted:
            self.wait_for_hub()
        for site in self.sites:
            if site.agent is not None and not site.agent.alive():
                self.start_agent(site)
                restarted.append(site.agent.name)
        return restarted

    # -- the vendor -----------------------------------------------------------------------------

    def package(self, *, sleep: float = 0.0) -> Path:
        path = self.root / f"model-{sleep:g}.zip"
        if not path.exists():
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("model.py", textwrap.dedent(f"""
                import time

                def load(model_dir):
                    time.sleep({sleep})
                    return None
                """) + PREDICT)  # fmt: skip
        return path

    def upload(self, *, sleep: float = 0.0, name: str = "m") -> int:
        artifact = self.package(sleep=sleep)

        def post() -> requests.Response | None:
            try:
                with artifact.open("rb") as fh:
                    return requests.post(
                        f"{self.url}/api/v1/submissions", headers={"Authorization": f"Bearer {self.vendor_token}"},
                        data={"task": self.task_id, "name": f"{name}-{len(self.submissions)}",
                              "artifact_format": "python_package"},
                        files={"artifact": (artifact.name, fh)}, timeout=60,
                    )  # fmt: skip
            except requests.RequestException:
                return None  # the hub is restarting

        response = wait_for(post, timeout=60, what="the upload to reach the hub")
        assert response.status_code == 201, response.text
        self.submissions.append(int(response.json()["id"]))
        return self.submissions[-1]

    # -- the hub's records (read-only, straight from its database file) ---------------------------

    def query(self, sql: str, *args: Any) -> list[tuple]:
        for _ in range(50):
            try:
                with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)) as db:
                    return db.execute(sql, args).fetchall()
            except sqlite3.OperationalError:  # locked for a moment
                time.sleep(0.1)
        raise RuntimeError("the hub's database stayed locked")

    def jobs(self) -> list[tuple]:
        return self.query("SELECT id, status, failure_reason, site_id, submission_id, attempts FROM jobs_job ORDER BY id")

    def job_status(self, job_id: int) -> str:
        return self.query("SELECT status FROM jobs_job WHERE id = ?", job_id)[0][0]

    def jobs_of(self, submission_id: int) -> list[tuple]:
        return self.query("SELECT id, status, failure_reason, site_id FROM jobs_job WHERE submission_id = ?", submission_id)

    def site_health(self, site: Site) -> tuple[str, str]:
        return self.query("SELECT health_status, health_detail FROM sites_site WHERE id = ?", site.site_id)[0]

    def audit_count(self, action: str) -> int:
        return self.query("SELECT COUNT(*) FROM audit_auditevent WHERE action = ?", action)[0][0]

    def running_containers(self, site: Site) -> list[dict]:
        return [c for c in self._containers() if site.root.as_posix() in json.dumps(c.get("Mounts") or [])
                and c.get("State") == "running"]  # fmt: skip

    def _containers(self) -> list[dict]:
        """This world's sandbox containers (the engine's list: no per-container lookups that a
        container removed meanwhile would fail)."""
        import docker

        from evaluator.sandbox import SANDBOX_LABEL

        client = docker.from_env(timeout=60)
        try:
            listed = client.api.containers(all=True, filters={"label": SANDBOX_LABEL})
            return [c for c in listed if str(self.root) in json.dumps(c.get("Mounts") or [])]
        finally:
            client.close()

    def remove_containers(self) -> int:
        import docker

        removed = 0
        client = docker.from_env(timeout=60)
        try:
            for container in self._containers():
                with contextlib.suppress(Exception):
                    client.api.remove_container(container["Id"], force=True, v=True)
                    removed += 1
        finally:
            client.close()
        return removed

    # -- the invariants ------------------------------------------------------------------------

    def settle(self, *, timeout: float = 180) -> list[str]:
        """Waits until every job and submission is terminal (restarting dead processes as a
        supervisor would); returns the violations of invariant 1 (what did not end in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.supervise()
            jobs = self.jobs()
            subs = self.query("SELECT id, status FROM submissions_submission")
            if all(s in TERMINAL_JOBS for _, s, *_ in jobs) and all(s in TERMINAL_SUBMISSIONS for _, s in subs):
                return []
            time.sleep(0.5)
        return [f"job {j} still {s} after {timeout:.0f}s" for j, s, *_ in self.jobs() if s not in TERMINAL_JOBS] + [
            f"submission {i} still {s} after {timeout:.0f}s"
            for i, s in self.query("SELECT id, status FROM submissions_submission") if s not in TERMINAL_SUBMISSIONS
        ]  # fmt: skip

    def check(self, *, timeout: float = 180) -> list[str]:
        violations = self.settle(timeout=timeout)
        violations += self._check_results()
        violations += self._check_ledgers()
        violations += self._check_leftovers()
        return violations

    def _check_results(self) -> list[str]:
        out = []
        results = Counter(j for (j,) in self.query("SELECT job_id FROM jobs_result"))
        receipts = Counter(j for (j,) in self.query("SELECT job_id FROM egress_egressrecord WHERE kind = 'metrics'"))
        for job_id, status, reason, *_ in self.jobs():
            want = 1 if status == "succeeded" else 0
            if results[job_id] != want or receipts[job_id] != want:
                out.append(f"job {job_id} {status}/{reason}: {results[job_id]} result(s), {receipts[job_id]} receipt(s)")
        return out

    def _check_ledgers(self) -> list[str]:
        from evaluator.ledger import Ledger
        from evaluator.ledger_reconcile import reconcile
        from evaluator.site_budget import SiteBudget
        from evaluator.state import AgentState

        out = []
        for site in self.sites:
            rows = self.query(
                "SELECT id, job_id, kind, sha256, bytes, task_id, vendor_id, rho, epsilon, delta "
                "FROM egress_egressrecord WHERE site_id = ?", site.site_id,
            )  # fmt: skip
            keys = ("id", "job_id", "kind", "sha256", "bytes", "task_id", "vendor_id", "rho", "epsilon", "delta")
            receipts = [dict(zip(keys, row, strict=True)) for row in rows]
            ledger = Ledger(site.data_dir / "ledger.jsonl")
            report = reconcile(
                ledger=ledger, state=AgentState(site.data_dir / "agent-state.json"),
                budget=SiteBudget(site.data_dir / "site-budget.json"), receipts=receipts, repair=True,
                grace_seconds=0,
            )  # fmt: skip
            self.ledger_repairs.update(confirmed=len(report.confirmed), voided=len(report.voided))
            for kind in ("missing_at_site", "missing_at_hub", "duplicates", "pending"):
                out += [f"{site.name} ledger: {kind} {name}" for name in getattr(report, kind)]
            counted = Counter((str(e.job_id), e.sha256) for e in ledger.read_entries() if e.counts)
            hub = Counter((str(r["job_id"]), r["sha256"]) for r in receipts)
            if counted != hub:
                out.append(f"{site.name} ledger != receipts: site-only {counted - hub}, hub-only {hub - counted}")
        return out

    def _check_leftovers(self) -> list[str]:
        def clean() -> bool:
            folders = [p for s in self.sites if s.work_dir.is_dir() for p in s.work_dir.iterdir()
                       if p.name.startswith(("job-", "run-", "canary-"))]  # fmt: skip
            return not folders and not self._containers()

        try:
            wait_for(clean, timeout=30, what="the agents to clean up", every=1)
            return []
        except TimeoutError:
            folders = [str(p) for s in self.sites if s.work_dir.is_dir() for p in s.work_dir.iterdir()]
            return [f"left behind: {len(self._containers())} container(s), folders {folders}"]

    # -- helpers for faults --------------------------------------------------------------------

    @contextlib.contextmanager
    def broker_down(self) -> Iterator[None]:
        """The broker refuses every message: its queue folder is replaced by a file."""
        queue = self.var / "broker" / "queue"
        moved = queue.with_name("queue.down")
        queue.rename(moved)
        queue.write_text("broker down (fault injection)")
        try:
            yield
        finally:
            queue.unlink()
            moved.rename(queue)
