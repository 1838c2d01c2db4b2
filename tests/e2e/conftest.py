"""End-to-end fixtures: a live hub (real HTTP), real site agents, real sandboxes.

The hub is pytest-django's ``live_server`` on a SQLite *file* (one connection per request
thread, as in the embedded deployment). Agents run in-process as threads (``AgentThread``) or
as ``python -m evaluator run`` subprocesses (``AgentProcess``, for the kill test). Vendors
upload over HTTP with a personal token.

Without a reachable Docker engine these tests skip on a laptop and FAIL in CI (CI=true).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
sys.path.insert(0, str(EXAMPLES))
from _common import load_split  # noqa: E402

# Example script and artifact name per submission format.
EXAMPLE_SCRIPTS = {
    "sklearn": ("make_sklearn_model.py", "model.joblib"),
    "torchscript": ("make_torchscript_model.py", "model.pt"),
    "onnx": ("make_onnx_model.py", "model.onnx"),
    "python_package": ("make_python_package.py", "model.zip"),
}
WAIT_SECONDS = 120


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(message: str) -> None:
    if _in_ci():
        pytest.fail(f"{message} (CI is set: the end-to-end suite must not skip)", pytrace=False)
    pytest.skip(message)


# --- session-wide: database, engine, image, artifacts -------------------------------------------


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        _unavailable(f"Docker engine unreachable: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def runner_image(docker_client) -> str:
    try:
        from sandbox_images.build import ensure_runner_image

        return ensure_runner_image()
    except Exception as exc:
        _unavailable(f"the runner image could not be built: {exc}")
        raise


@pytest.fixture(scope="session")
def example_artifacts(tmp_path_factory, worker_id) -> dict[str, Path]:
    """The four vendor examples of docs/examples, built once (in parallel) per test run: under
    pytest-xdist the first worker builds them into the run's shared temporary folder, under a
    file lock, and the others reuse them (each build trains a model: seconds of CPU)."""
    if worker_id == "master":  # not distributed
        return _build_example_artifacts(tmp_path_factory.mktemp("artifacts"))
    shared = tmp_path_factory.getbasetemp().parent / "example-artifacts"
    with open(f"{shared}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (shared / ".complete").is_file():
            shutil.rmtree(shared, ignore_errors=True)  # a worker that failed half-way
            shared.mkdir()
            _build_example_artifacts(shared)
            (shared / ".complete").write_text("")
    return {fmt: shared / name for fmt, (_, name) in EXAMPLE_SCRIPTS.items()}


def _build_example_artifacts(out: Path) -> dict[str, Path]:
    procs = {}
    for fmt, (script, name) in EXAMPLE_SCRIPTS.items():
        procs[fmt] = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), str(out / name)],
            cwd=EXAMPLES,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    artifacts = {}
    for fmt, proc in procs.items():
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output.decode(errors="replace")
        artifacts[fmt] = out / EXAMPLE_SCRIPTS[fmt][1]
    return artifacts


@pytest.fixture(scope="session")
def test_split() -> tuple[np.ndarray, np.ndarray]:
    """The held-out rows of the examples' fixed split (what the sites hold, in shards)."""
    _, _, features, labels = load_split()
    return features, labels


# --- the hub ------------------------------------------------------------------------------------


@dataclass
class Vendor:
    """A vendor organization talking to the hub over HTTP with a personal token."""

    persona: object
    base_url: str
    token: str

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def upload(self, task_id: int, artifact: Path, fmt: str, name: str) -> int:
        with artifact.open("rb") as fh:
            resp = requests.post(
                f"{self.base_url}/api/v1/submissions",
                headers=self._headers(),
                data={"task": task_id, "name": name, "artifact_format": fmt},
                files={"artifact": (artifact.name, fh)},
                timeout=60,
            )
        assert resp.status_code == 201, resp.text
        return int(resp.json()["id"])

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.base_url}{path}", headers=self._headers(), timeout=30)


@pytest.fixture
def hub_vendor(live_server, vendor) -> Vendor:
    from marketplace.accounts.services import personal_token_create

    _, raw = personal_token_create(user=vendor.user, name="e2e")
    return Vendor(persona=vendor, base_url=live_server.url, token=raw)


def e2e_task(owner, **overrides):
    from tests.conftest import make_task

    spec = {"quota_per_day": 100, "min_test_rows": 10, **overrides}
    return make_task(owner, **spec)


def wait_for(predicate: Callable[[], object], *, timeout: float = WAIT_SECONDS, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def wait_for_run_completed(run, *, timeout: float):
    """Waits until the fine-tuning run ends and checks that it completed."""

    def finished():
        run.refresh_from_db()
        return run if run.status in ("completed", "failed", "stopped") else None

    wait_for(finished, timeout=timeout, what="the fine-tuning run to finish")
    assert run.status == "completed", run.status_reason
    return run


def wait_for_submission(
    submission_id: int, *, statuses=("scored", "failed", "rejected"), timeout=WAIT_SECONDS
):
    from marketplace.submissions.models import Submission

    def done():
        sub = Submission.objects.get(id=submission_id)
        return sub if sub.status in statuses else None

    return wait_for(done, timeout=timeout, what=f"submission {submission_id} to reach {statuses}")


# --- sites and agents ---------------------------------------------------------------------------


@dataclass
class SiteDir:
    """One site's files: token, private data store, agent config."""

    name: str
    root: Path
    token: str
    hub_url: str
    image: str
    site: object = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def config_path(self) -> Path:
        return self.root / "site.toml"

    def write_config(self, *, hub_url: str | None = None, retry: str = "") -> Path:
        token_file = self.root / "site-token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        self.config_path.write_text(
            f'hub_url = "{hub_url or self.hub_url}"\n'
            'site_token_file = "site-token"\n'
            'data_dir = "data"\n'
            f'image = "{self.image}"\n'
            "poll_interval_seconds = 0.3\n"
            "\n[limits]\nmax_memory_mb = 2048\nmax_cpus = 1.0\nmax_timeout_seconds = 600\n"
            + (f"\n[retry]\n{retry}" if retry else "")
        )
        return self.config_path

    def config(self):
        from evaluator.config import load_config

        return load_config(self.config_path, env={})

    def register(self, task_id: int, features: np.ndarray, labels: np.ndarray) -> dict:
        """Store the shard privately, then report its metadata to the hub (real HTTP)."""
        from evaluator.client import HubClient
        from evaluator.datasets import register_task_data

        incoming = self.root / "incoming"
        incoming.mkdir(exist_ok=True)
        np.save(incoming / "features.npy", features)
        np.save(incoming / "labels.npy", labels)
        meta = register_task_data(
            data_dir=self.data_dir,
            task_id=task_id,
            features_path=incoming / "features.npy",
            labels_path=incoming / "labels.npy",
            input_spec={"n_features": 30, "n_classes": 2, "task_type": "binary_classification"},
        )
        HubClient.from_config(self.config()).register_shard(
            task_id=task_id,
            row_count=meta["row_count"],
            fingerprint=meta["fingerprint"],
            split_sizes=meta["split_sizes"],
        )
        return meta

    def ledger_entries(self) -> list:
        from evaluator.ledger import Ledger

        return Ledger(self.data_dir / "ledger.jsonl").read_entries()

    def state(self) -> dict:
        path = self.data_dir / "agent-state.json"
        return json.loads(path.read_text()) if path.exists() else {"posted": [], "pending": {}}


@pytest.fixture
def make_site_dir(live_server, owner, runner_image, tmp_path) -> Callable[..., SiteDir]:
    from tests.conftest import make_site

    def make(name: str) -> SiteDir:
        handle = make_site(owner, name)
        root = tmp_path / "sites" / name
        root.mkdir(parents=True)
        site_dir = SiteDir(
            name=name,
            root=root,
            token=handle.token,
            hub_url=live_server.url,
            image=runner_image,
            site=handle.site,
        )
        site_dir.write_config()
        return site_dir

    return make


class AgentThread:
    """A real ``evaluator.agent.Agent`` with a real ``HubClient``, serving in a thread."""

    def __init__(self, site_dir: SiteDir) -> None:
        from evaluator.agent import Agent
        from evaluator.client import HubClient

        config = site_dir.config()
        self.client = HubClient.from_config(config)
        self.agent = Agent(config, self.client)
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name=f"agent-{site_dir.name}", daemon=True)

    @property
    def agent_id(self) -> str:
        return self.client.agent_id

    def _run(self) -> None:
        try:
            self.agent.run_forever()
        except BaseException as exc:  # run_forever must never end on its own
            self.errors.append(exc)

    def start(self) -> AgentThread:
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 60) -> None:
        self.agent.stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the agent did not stop"
        assert self.errors == []


@pytest.fixture
def agents() -> Iterator[Callable[[SiteDir], AgentThread]]:
    started: list[AgentThread] = []

    def start(site_dir: SiteDir) -> AgentThread:
        agent = AgentThread(site_dir).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.agent.stop()
    for agent in started:
        agent._thread.join(60)


@dataclass
class AgentProcess:
    """``python -m evaluator run --config site.toml`` as a child process."""

    site_dir: SiteDir
    log_path: Path
    proc: subprocess.Popen = field(init=False)

    def start(self) -> AgentProcess:
        self._log = self.log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VAULTBENCH_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evaluator", "run", "--config", str(self.site_dir.config_path)],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def agent_processes(tmp_path) -> Iterator[Callable[[SiteDir], AgentProcess]]:
    started: list[AgentProcess] = []

    def start(site_dir: SiteDir) -> AgentProcess:
        agent = AgentProcess(site_dir, tmp_path / f"agent-{site_dir.name}-{len(started)}.log").start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


# --- sandbox containers of one site ----------------------------------------------------------


def site_containers(docker_client, site_dir: SiteDir, *, running_only: bool = False) -> list:
    """Sandbox containers whose output mount lies in this site's data dir (other suites may be
    running sandboxes on the same engine at the same time: never touch theirs)."""
    from evaluator.sandbox import SANDBOX_LABEL

    prefix = str(site_dir.root.resolve())
    found = []
    # sparse: the engine's list as it is (mounts included), without inspecting each container,
    # which fails when a container of another test is removed between the list and the inspect.
    listed = docker_client.containers.list(all=not running_only, filters={"label": SANDBOX_LABEL}, sparse=True)
    for container in listed:
        try:
            mounts = container.attrs.get("Mounts") or []
        except Exception:
            continue
        if any(str(m.get("Source", "")).startswith(prefix) for m in mounts):
            found.append(container)
    return found


def remove_site_containers(docker_client, site_dir: SiteDir) -> int:
    import docker.errors

    removed = 0
    for container in site_containers(docker_client, site_dir):
        try:
            container.remove(force=True, v=True)
            removed += 1
        except docker.errors.NotFound:
            pass
    return removed


# --- a TCP forwarder that can be switched off ---------------------------------------------------


class Forwarder:
    """Forwards 127.0.0.1:<port> to the hub; ``stop()`` closes the port and every open connection,
    so the agent sees connection refused. Records the request lines it forwarded to the hub."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()  # nobody listens there until start(): connections are refused
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._streams: list[bytearray] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(32)
        listener.settimeout(0.2)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    @property
    def running(self) -> bool:
        return self._listener is not None

    def request_lines(self) -> list[str]:
        import re

        with self._lock:
            streams = [bytes(s) for s in self._streams]
        lines = []
        for stream in streams:
            lines += [m.decode() for m in re.findall(rb"(?:GET|POST) /api/v1/agent/\S+", stream)]
        return lines

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            stream = bytearray()
            with self._lock:
                self._conns += [client, upstream]
                self._streams.append(stream)
            threading.Thread(target=self._pump, args=(client, upstream, stream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record is not None:
                    with self._lock:
                        record += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def forwarder(live_server) -> Iterator[Forwarder]:
    from urllib.parse import urlsplit

    parts = urlsplit(live_server.url)
    fwd = Forwarder((parts.hostname or "localhost", parts.port or 80))
    yield fwd
    fwd.stop()


@pytest.fixture
def quiet_agent_logs(caplog):
    caplog.set_level(logging.INFO, logger="evaluator")
    return caplog
