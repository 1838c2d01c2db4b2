"""Shared pieces of the federated benchmarks (federated_breast_cancer.py, federated_mnist1d.py).

Three ways to run the same FedAvg on the same model, the same per-site rows and the same
hyperparameters:

- ``plain_fedavg``: an in-process loop. Each site's local training is the very code the sandbox
  runs (``evaluator.runner.train.TorchScriptTrainer.train``: SGD, cross-entropy on the module's
  probabilities, ``rng.permutation`` batches) on the same TorchScript file; the server keeps the
  model as an offset ``D`` exactly like the hub (float64 update, stored as float32 each round)
  and averages the sites' deltas weighted by their rows (``example_weighted``: what Vaultbench
  does by default, also under secure aggregation) or with equal weights.
- ``run_flower``: Flower 1.41 simulation (Ray backend, Message API, ``flwr.serverapp.strategy.
  FedAvg``), the same trainer in the ClientApp, every node sampled every round, each reply
  weighted by ``num-examples`` (the site's rows, or 1) and the same per-(round, site) seeds as
  the plain loop.
- ``VaultbenchHub``: the real thing. A hub (SQLite, migrated) served by gunicorn on loopback,
  real agents (``evaluator.agent.Agent``, real ``HubClient`` over HTTP) in threads, each with
  its own data dir, training in the real runner image (one kept-alive sandbox per run and site).
  The owner sets the task's ``fl_*`` fields and approves with the hub's services; the vendor
  uploads over HTTP and asks for the run with ``run_request``.

The rows a site trains on are its whole train split (a run approved without the validation
holdout, protocol A) or its train split minus the seeded 20 % holdout (``fit_rows``), in the
same (sorted) order, for all three.

Measurement lives here only: a ``HubClient`` subclass records each request (time, round, phase,
body bytes each way) and keeps the offset ``D_r`` the first site downloads each round; the
training session and the secure-aggregation client are wrapped with timers. Per-round test
accuracy of a Vaultbench run comes from those offsets (``w0 + D_r``, evaluated in process: the
benchmark is the vendor and owns the model) and the final ``D_R`` of the fine-tuned submission.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
for p in (str(REPO), str(BENCH), str(REPO / "docs" / "examples")):
    if p not in sys.path:
        sys.path.insert(0, p)
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from job_overhead import free_port, hub_env, machine, running_hub  # noqa: E402,F401

from evaluator.client import HubClient  # noqa: E402
from evaluator.datasets import VALIDATION_SEED, validation_holdout  # noqa: E402
from evaluator.federated.updates import Layout, flatten, unflatten  # noqa: E402

# --- host-side training: the sandbox's own trainer on the vendor's own TorchScript file -------


def load_trainer(module_path: str | Path):
    import torch

    from evaluator.runner.train import TorchScriptTrainer

    torch.set_num_threads(1)  # the sandbox has 1 CPU
    return TorchScriptTrainer(Path(module_path))


def fit_rows(n_rows: int) -> np.ndarray:
    """The rows a site trains on (its train split minus the validation holdout), sorted."""
    return validation_holdout(n_rows, seed=VALIDATION_SEED)[0]


def round_seed(base: int, rnd: int, site: int) -> int:
    return (base * 1_000_003 + rnd * 1009 + site * 7) % (2**31)


def local_round(trainer, weights: dict, x: np.ndarray, y: np.ndarray, cfg: dict, seed: int) -> dict:
    trainer.set_weights(weights)
    trainer.train(x, y, {**cfg, "proximal_mu": 0.0, "seed": seed})
    return trainer.get_weights()


def accuracy(trainer, weights: dict, x: np.ndarray, y: np.ndarray) -> float:
    """Test accuracy of ``weights``, through the trainer's own predict (the runner holds the
    parameters and writes them into a fresh copy of the module: ``trainer.module`` alone still
    has whatever it last trained, or ``w0``)."""
    trainer.set_weights(weights)
    probs = trainer.predict(np.ascontiguousarray(x, dtype=np.float32))
    return float((np.asarray(probs).argmax(1) == y).mean())


def add_offset(w0: dict, offset: np.ndarray, layout: Layout) -> dict:
    d = unflatten(np.asarray(offset, dtype=np.float32), layout)
    return {n: (w0[n] + d[n]).astype(np.float32) for n in w0}


def plain_fedavg(
    module_path: Path,
    sites: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    rounds: int,
    cfg: dict,
    test: tuple[np.ndarray, np.ndarray],
    seed_base: int,
    example_weighted: bool = False,
) -> dict:
    """FedAvg in one process; accuracy on ``test`` after each round (not timed). Sites' deltas are
    averaged with equal weights, or weighted by their rows (``example_weighted``: protocol A)."""
    trainer = load_trainer(module_path)
    w0 = trainer.get_weights()
    _, layout = flatten(w0)
    offset = np.zeros(layout.size, dtype=np.float32)
    curve, seconds, norms = [], [], []
    for r in range(rounds):
        start = time.perf_counter()
        old = add_offset(w0, offset, layout)
        old_flat = flatten(old)[0]
        deltas = []
        for i, (x, y) in enumerate(sites):
            new = local_round(trainer, old, x, y, cfg, round_seed(seed_base, r, i))
            deltas.append(flatten(new)[0] - old_flat)
        weights = [len(y) for _, y in sites] if example_weighted else [1] * len(sites)
        mean = np.average(np.stack(deltas).astype(np.float64), axis=0, weights=weights)
        offset = (offset.astype(np.float64) + mean).astype(np.float32)  # what the hub stores
        seconds.append(time.perf_counter() - start)
        norms.append(max(float(np.linalg.norm(d)) for d in deltas))
        curve.append(accuracy(trainer, add_offset(w0, offset, layout), *test))
    return {"curve": curve, "round_seconds": seconds, "max_update_norm": norms, "offset": offset.tolist()}


def centralized(
    module_path: Path, x: np.ndarray, y: np.ndarray, *, epochs: int, cfg: dict, test, seed_base: int
) -> dict:
    trainer = load_trainer(module_path)
    w = trainer.get_weights()
    curve, seconds = [], []
    for e in range(epochs):
        start = time.perf_counter()
        w = local_round(trainer, w, x, y, {**cfg, "local_epochs": 1}, round_seed(seed_base, e, 99))
        seconds.append(time.perf_counter() - start)
        curve.append(accuracy(trainer, w, *test))
    return {"curve": curve, "epoch_seconds": seconds}


# --- Flower ------------------------------------------------------------------------------------

_FLOWER_CACHE: dict[str, Any] = {}


def _flower_client_data():
    """In a Ray worker: the sites' rows and the model, from the folder named in the env."""
    if "data" not in _FLOWER_CACHE:
        folder = Path(os.environ["VB_FLOWER_DATA"])
        meta = json.loads((folder / "meta.json").read_text())
        sites = [
            (np.load(folder / f"x{i}.npy"), np.load(folder / f"y{i}.npy")) for i in range(meta["n_sites"])
        ]
        _FLOWER_CACHE["data"] = (meta, sites, load_trainer(folder / "model.pt"))
    return _FLOWER_CACHE["data"]


def _flower_apps(n_sites: int, rounds: int, w0: dict, test, log: list):
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    names = sorted(w0)
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        meta, sites, trainer = _flower_client_data()
        site = int(context.node_config["partition-id"])
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        weights = dict(zip(meta["names"], arrays, strict=True))
        rnd = int(msg.content["config"]["server-round"]) - 1
        x, y = sites[site]
        new = local_round(trainer, weights, x, y, meta["cfg"], round_seed(meta["seed_base"], rnd, site))
        reply = RecordDict(
            {
                "arrays": ArrayRecord([new[n] for n in meta["names"]]),
                "metrics": MetricRecord({"num-examples": len(y) if meta["example_weighted"] else 1}),
            }
        )
        return Message(content=reply, reply_to=msg)

    server = ServerApp()
    eval_trainer = load_trainer(Path(os.environ["VB_FLOWER_DATA"]) / "model.pt")

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        start = time.perf_counter()
        weights = dict(zip(names, arrays.to_numpy_ndarrays(), strict=True))
        acc = accuracy(eval_trainer, weights, *test)
        log.append({"round": server_round, "t": start, "eval_seconds": time.perf_counter() - start,
                    "accuracy": acc, "bytes": arrays.count_bytes()})  # fmt: skip
        return MetricRecord({"accuracy": acc})

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n_sites, min_evaluate_nodes=n_sites,
            min_available_nodes=n_sites,
        )  # fmt: skip
        strategy.start(
            grid=grid, initial_arrays=ArrayRecord([w0[n] for n in names]), num_rounds=rounds,
            train_config=ConfigRecord({}), evaluate_fn=evaluate,
        )  # fmt: skip

    return server, client


def run_flower(
    module_path: Path,
    sites: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    rounds: int,
    cfg: dict,
    test,
    seed_base: int,
    work: Path,
    example_weighted: bool = False,
) -> dict:
    """Flower simulation (Ray); per-round times from the server's evaluate_fn timestamps. FedAvg
    weights each reply by ``num-examples``: the site's rows, or 1 for equal weights."""
    import shutil

    from flwr.simulation import run_simulation

    folder = work / f"flower-{rounds}"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(module_path, folder / "model.pt")
    for i, (x, y) in enumerate(sites):
        np.save(folder / f"x{i}.npy", x)
        np.save(folder / f"y{i}.npy", y)
    trainer = load_trainer(module_path)
    w0 = trainer.get_weights()
    (folder / "meta.json").write_text(json.dumps(
        {"n_sites": len(sites), "names": sorted(w0), "cfg": cfg, "seed_base": seed_base,
         "example_weighted": example_weighted}))  # fmt: skip
    os.environ["VB_FLOWER_DATA"] = str(folder)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), str(BENCH)])
    log: list[dict] = []
    server, client = _flower_apps(len(sites), rounds, w0, test, log)
    start = time.perf_counter()
    run_simulation(
        server_app=server, client_app=client, num_supernodes=len(sites),
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                        "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False}},
    )  # fmt: skip
    total = time.perf_counter() - start
    log.sort(key=lambda e: e["round"])
    if len(log) != rounds + 1:
        raise RuntimeError(f"Flower ran {len(log) - 1} of {rounds} rounds")
    seconds = [log[i]["t"] - log[i - 1]["t"] - log[i - 1]["eval_seconds"] for i in range(1, len(log))]
    return {
        "curve": [e["accuracy"] for e in log[1:]],
        "round_seconds": seconds,
        "total_seconds": total,
        "startup_seconds": total - sum(seconds) - sum(e["eval_seconds"] for e in log),
        "parameter_bytes": log[0]["bytes"],
    }


# --- Vaultbench: hub, sites, agents -----------------------------------------------------------


class Recorder:
    """What one agent did, as seen from the benchmark's wrappers."""

    def __init__(self, keep_offsets: bool) -> None:
        self.keep_offsets = keep_offsets
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests: list[dict] = []
        self.work: list[dict] = []
        self.offsets: dict[int, bytes] = {}
        self.current_round = -1

    def add_work(self, kind: str, start: float, end: float) -> None:
        with self.lock:
            self.work.append({"kind": kind, "round": self.current_round, "t0": start, "t1": end})


RECORDERS: dict[str, Recorder] = {}  # agent thread name -> recorder


def _recorder() -> Recorder | None:
    # The participant's training thread is named after its agent thread ("vb-agent-0_0").
    return RECORDERS.get(threading.current_thread().name.split("_")[0])


class MeasuredClient(HubClient):
    """The real client; each request is recorded (wall clock, path, body bytes each way)."""

    recorder: Recorder

    def _request(self, method, path, data, **kwargs):
        start = time.time()
        resp = super()._request(method, path, data, **kwargs)
        down = resp.headers.get("Content-Length")
        down = int(down) if down and down.isdigit() else (0 if kwargs.get("stream") else len(resp.content))
        parts = path.split("?")[0].strip("/").split("/")  # long polls and held posts carry ?since=/?wait=
        rnd, step = None, parts[-1]
        if len(parts) >= 5 and parts[0] == "runs" and parts[2] == "rounds":
            rnd = int(parts[3])
        with self.recorder.lock:
            self.recorder.requests.append({"method": method, "step": step, "round": rnd, "t0": start,
                                           "t1": time.time(), "up": len(data or b""), "down": down})  # fmt: skip
        return resp

    def run_state(self, run_id, **kwargs):
        state = super().run_state(run_id, **kwargs)
        self.record_state(state)
        return state

    def post_round(self, run_id, round_number, step, body, **kwargs):
        answer = super().post_round(run_id, round_number, step, body, **kwargs)
        if isinstance(answer.get("state"), dict):
            self.record_state(answer["state"], from_post=True)
        return answer

    def record_state(self, state: dict, *, from_post: bool = False) -> None:
        """The round a state is about; ``D_r`` when it travels inline (small models)."""
        inline = state.get("offset")
        if self.recorder.keep_offsets and isinstance(inline, dict):
            import base64

            self.recorder.offsets[int(inline["round"])] = base64.b64decode(inline["safetensors"])
        with self.recorder.lock:
            if not from_post:
                self.recorder.requests[-1]["round"] = state.get("round")
            self.recorder.current_round = int(state.get("round", -1) or 0)

    def download_round_offset(self, run_id, round_number, dest, *, max_bytes):
        path = super().download_round_offset(run_id, round_number, dest, max_bytes=max_bytes)
        if self.recorder.keep_offsets:
            self.recorder.offsets[int(round_number)] = Path(path).read_bytes()
        return path


def _timed_method(cls, name: str, label: str) -> None:
    original = getattr(cls, name)
    if getattr(original, "_vb_timed", False):
        return

    def timed(self, *args, **kwargs):
        start = time.time()
        try:
            return original(self, *args, **kwargs)
        finally:
            rec = _recorder()
            if rec is not None:
                rec.add_work(label, start, time.time())

    timed._vb_timed = True  # type: ignore[attr-defined]
    setattr(cls, name, timed)


def _instrument() -> None:
    """Timers around the training sandbox and the site's crypto (benchmark-side wrappers)."""
    from evaluator import training_sandbox
    from evaluator.federated import secagg, site

    start = training_sandbox.TrainingSession.start
    if not getattr(start, "_vb_timed", False):

        def timed_start(self, *args, **kwargs):  # labelled by the kind of container the session got
            began = time.time()
            try:
                return start(self, *args, **kwargs)
            finally:
                rec = _recorder()
                if rec is not None:
                    kind = "warm container" if getattr(self, "warm", False) else "cold container"
                    rec.add_work(f"sandbox start ({kind} + load parent)", began, time.time())

        timed_start._vb_timed = True  # type: ignore[attr-defined]
        training_sandbox.TrainingSession.start = timed_start
    _timed_method(training_sandbox.TrainingSession, "run_round", "sandbox round (train + predict + files)")
    _timed_method(secagg.SecAggClient, "advertise", "secagg: keys")
    _timed_method(secagg.SecAggClient, "share_keys", "secagg: Shamir shares + encrypt")
    _timed_method(secagg.SecAggClient, "masked_input", "secagg: masks (PRG)")
    _timed_method(secagg.SecAggClient, "unmask_shares", "secagg: unmask answer")
    original = site.prepare_site_update
    if not getattr(original, "_vb_timed", False):

        def prepare(*args, **kwargs):
            start = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                rec = _recorder()
                if rec is not None:
                    rec.add_work("clip + noise + quantize", start, time.time())

        prepare._vb_timed = True  # type: ignore[attr-defined]
        site.prepare_site_update = prepare


class VaultbenchHub:
    """A hub on loopback, ``n_sites`` sites with running agents; owner and vendor personas."""

    def __init__(self, n_sites: int, *, poll_seconds: float = 0.5, keep: bool = False) -> None:
        self.n_sites = n_sites
        self.poll_seconds = poll_seconds
        self.keep = keep
        self.root = Path(tempfile.mkdtemp(prefix="vb-fl-bench-"))
        self._stack = contextlib.ExitStack()
        self.agents: list[Any] = []
        self.recorders: list[Recorder] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> VaultbenchHub:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for agent in self.agents:
            agent.stop()
        for thread in getattr(self, "threads", []):
            thread.join(60)
        self._stack.close()
        if not self.keep:
            import shutil

            shutil.rmtree(self.root, ignore_errors=True)

    def _start(self) -> None:
        from sandbox_images.build import ensure_runner_image

        self.image = ensure_runner_image()
        print(f"work folder: {self.root}", file=sys.stderr)
        env = hub_env(self.root / "hub")
        # gunicorn runs 2 processes x 4 threads here: up to 3 held state requests per process
        # (one per site) still leave a thread for the posts (docs/federated-protocol.md).
        env.setdefault("VAULTBENCH_FL_STATE_WAITERS", "3")
        (self.root / "hub").mkdir()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True)
        if os.environ.get("VB_BENCH_SQLITE_WAL"):  # an experiment: the hub's SQLite file in WAL mode
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.root / "hub" / "hub.sqlite3")) as db:
                print("journal mode:", db.execute("PRAGMA journal_mode=WAL").fetchone()[0], file=sys.stderr)
        os.environ.update(env)
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.db import connections

        from marketplace.accounts.services import organization_create, personal_token_create
        from marketplace.sites.services import site_create

        users = get_user_model().objects
        self.owner = users.create_user(username="owner", password="bench-owner-pw-1")
        self.vendor = users.create_user(username="vendor", password="bench-vendor-pw-1")
        self.owner_org = organization_create(name="Bench Hospitals", kind="data_owner", creator=self.owner)
        organization_create(name="Bench Vendor", kind="vendor", creator=self.vendor)
        _, self.vendor_token = personal_token_create(user=self.vendor, name="bench")
        tokens = [site_create(organization=self.owner_org, name=f"site-{i}", actor=self.owner)[1]
                  for i in range(self.n_sites)]  # fmt: skip
        connections.close_all()
        self.url = self._stack.enter_context(running_hub(env, free_port(), self.root / "gunicorn.log"))
        _instrument()
        from evaluator.config import load_config

        self.configs = []
        for i, token in enumerate(tokens):
            site = self.root / f"site-{i}"
            site.mkdir()
            (site / "site-token").write_text(token)
            (site / "site.toml").write_text(
                f'hub_url = "{self.url}"\nsite_token_file = "site-token"\ndata_dir = "data"\nimage = "{self.image}"\n'
                "poll_interval_seconds = 0.3\n"
                "\n[limits]\nmax_memory_mb = 2048\nmax_cpus = 1.0\nmax_timeout_seconds = 1800\n"
            )
            self.configs.append(load_config(site / "site.toml", env={}))

    def start_agents(self) -> None:
        from evaluator.agent import Agent

        self.threads = []
        for i, config in enumerate(self.configs):
            rec = Recorder(keep_offsets=(i == 0))
            client = MeasuredClient.from_config(config)
            client.recorder = rec
            agent = Agent(config, client)
            agent.run_poll_seconds = self.poll_seconds
            name = f"vb-agent-{i}"
            RECORDERS[name] = rec
            thread = threading.Thread(target=agent.run_forever, name=name, daemon=True)
            thread.start()
            self.agents.append(agent)
            self.recorders.append(rec)
            self.threads.append(thread)

    def warm_training_sandboxes(self, limits: dict, model_format: str = "torchscript", timeout: float = 300) -> None:
        """Each agent starts a training sandbox ahead for runs under the task's ``limits``, and
        this waits until they are ready (runs then start warm: evaluator/training_pool.py)."""
        from evaluator.sandbox import Limits
        from evaluator.sandbox_pool import PoolKey

        lim = Limits(memory_mb=limits["memory_mb"], cpus=limits["cpus"], timeout_seconds=limits["timeout_seconds"],
                     max_output_mb=limits["max_output_mb"])  # fmt: skip
        for agent in self.agents:
            agent.warm_training_sandbox(model_format, lim)
            pool = agent._training_pool()
            if pool is not None and not pool.wait_ready(PoolKey(agent.image_id(), model_format, lim, pool.runtime),
                                                        timeout=timeout):  # fmt: skip
                print("warning: a training sandbox did not get ready; the run may start cold", file=sys.stderr)

    # -- owner and vendor actions --------------------------------------------------------------

    def create_task(self, spec: dict) -> int:
        from marketplace.catalog.services import task_create, task_open

        task = task_create(organization=self.owner_org, actor=self.owner, spec=spec)
        return task_open(task=task, actor=self.owner).id

    def set_fl_policy(self, task_id: int, **fields: Any) -> None:
        """The owner edits the task's privacy fields (copied into a run when it is approved)."""
        from marketplace.catalog.models import Task
        from marketplace.catalog.services import task_update

        task_update(task=Task.objects.get(id=task_id), actor=self.owner, changes=fields)

    def register_site_data(self, site: int, task_id: int, spec: dict, test, train) -> None:
        from evaluator.datasets import register_task_data

        config = self.configs[site]
        incoming = self.root / f"site-{site}" / "incoming"
        incoming.mkdir(exist_ok=True)
        for split, (fx, fy) in (("test", test), ("train", train)):
            np.save(incoming / f"{split}-x.npy", np.asarray(fx, dtype=np.float32))
            np.save(incoming / f"{split}-y.npy", np.asarray(fy, dtype=np.int64))
            meta = register_task_data(
                data_dir=config.data_dir, task_id=task_id, features_path=incoming / f"{split}-x.npy",
                labels_path=incoming / f"{split}-y.npy", input_spec=spec, split=split,
            )  # fmt: skip
            if split == "test":
                HubClient.from_config(config).register_shard(
                    task_id=task_id, row_count=meta["row_count"], fingerprint=meta["fingerprint"],
                    split_sizes=meta["split_sizes"],
                )  # fmt: skip

    def upload(self, task_id: int, artifact: Path, name: str) -> int:
        import requests

        with artifact.open("rb") as fh:
            resp = requests.post(
                f"{self.url}/api/v1/submissions", headers={"Authorization": f"Bearer {self.vendor_token}"},
                data={"task": task_id, "name": name, "artifact_format": "torchscript"},
                files={"artifact": (artifact.name, fh)}, timeout=120,
            )  # fmt: skip
        resp.raise_for_status()
        return int(resp.json()["id"])

    def wait_scored(self, submission_id: int, timeout: float = 600) -> Any:
        from marketplace.jobs.models import Job, JobStatus
        from marketplace.submissions.models import Submission

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sub = Submission.objects.get(id=submission_id)
            open_jobs = (
                Job.objects.filter(submission_id=submission_id)
                .exclude(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED])
                .exclude(status__in=["cancelled", "expired"])
            )
            if sub.status in ("scored", "failed", "rejected") and not open_jobs.exists():
                if sub.status != "scored":
                    raise RuntimeError(f"submission {submission_id}: {sub.status} {sub.status_reason}")
                return sub
            time.sleep(0.5)
        raise TimeoutError(f"submission {submission_id} was not scored in {timeout}s")

    def finetune(self, parent_id: int, *, rounds: int, learning_rate: float, local_epochs: int,
                 batch_size: int, timeout: float = 1800, validation_holdout: bool = True) -> dict:  # fmt: skip
        """Request (vendor) + approve (owner) a run; wait for it and for its fine-tuned entry."""
        from marketplace.finetuning.models import RoundRecord
        from marketplace.finetuning.offsets import layout_of, offset_from_bytes
        from marketplace.finetuning.services import run_approve, run_request
        from marketplace.jobs.models import Job, JobStatus
        from marketplace.submissions.models import Submission

        for rec in self.recorders:
            rec.reset()
        parent = Submission.objects.get(id=parent_id)
        run = run_request(
            parent=parent, actor=self.vendor, rounds=rounds, learning_rate=learning_rate,
            local_epochs=local_epochs, batch_size=batch_size, round_timeout_seconds=300,
        )  # fmt: skip
        t_approve = time.time()
        run = run_approve(run=run, actor=self.owner, validation_holdout=validation_holdout)
        deadline = time.monotonic() + timeout
        while True:
            run.refresh_from_db()
            if run.status in ("completed", "failed", "stopped"):
                break
            jobs = list(Job.objects.filter(fl_participant__run=run).values_list("status", flat=True))
            if jobs and all(s == JobStatus.FAILED for s in jobs):
                raise RuntimeError(f"run {run.id}: every site's train job failed (see the agents' log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run.id} did not finish in {timeout}s")
            time.sleep(0.2)
        t_done = time.time()
        if run.status != "completed":
            raise RuntimeError(f"run {run.id} ended {run.status}: {run.status_reason}")
        child = self.wait_scored(run.result_id)  # its evaluation jobs must not overlap the next run
        layout = layout_of(run.layout)
        with child.weights_offset.open("rb") as fh:
            final = offset_from_bytes(fh.read(), layout)
        records = list(RoundRecord.objects.filter(run=run).order_by("round", "attempt"))
        return {
            "run": run,
            "layout": layout,
            "final_offset": final,
            "records": records,
            "t_approve": t_approve,
            "t_done": t_done,
            "child_id": child.id,
        }

    def site_accuracy(self, submission_id: int) -> float:
        """Accuracy over the sites' test splits, from the metrics each site released."""
        from evaluator.ledger import Ledger

        correct = rows = 0
        for config in self.configs:
            for entry in Ledger(config.ledger_path).read_entries():
                if entry.kind == "metrics" and str(entry.submission_id) == str(submission_id):
                    body = json.loads(entry.payload)
                    if "accuracy" not in (body.get("metrics") or {}):
                        continue  # released as noised statistics (not a plain accuracy)
                    correct += body["metrics"]["accuracy"] * body["n_rows"]
                    rows += body["n_rows"]
        return correct / rows if rows else float("nan")

    def site_epsilons(self, job_ids: set) -> list[float | None]:
        """The epsilon each site wrote in its ledger with its last update of the run."""
        from evaluator.ledger import Ledger

        out = []
        for config in self.configs:
            eps = [e.epsilon for e in Ledger(config.ledger_path).read_entries()
                   if e.kind == "update" and str(e.job_id) in job_ids]  # fmt: skip
            out.append(eps[-1] if eps else None)
        return out

    def offsets_by_round(self, layout: Layout) -> dict[int, np.ndarray]:
        from marketplace.finetuning.offsets import offset_from_bytes

        return {r: offset_from_bytes(b, layout) for r, b in self.recorders[0].offsets.items()}


# --- analysis of one Vaultbench run -----------------------------------------------------------

PHASE_STEPS = {True: ["keys", "shares", "masked", "unmask"], False: ["update"]}


def analyse_run(hub: VaultbenchHub, result: dict) -> dict:
    """Per-round wall times, phase walls, per-site work and bytes, from records and recorders."""
    run = result["run"]
    secure = bool(run.secure_aggregation)
    records = [r for r in result["records"] if r.status == "aggregated"]
    starts = [r.started_at.timestamp() for r in records]
    ends = [r.finished_at.timestamp() for r in records]
    round_seconds = [e - s for s, e in zip(starts, ends, strict=True)]
    steps = PHASE_STEPS[secure]
    posts = defaultdict(list)  # (round, step) -> end times over sites
    for rec in hub.recorders:
        for q in rec.requests:
            if q["method"] == "POST" and q["step"] in steps and q["round"] is not None:
                posts[(q["round"], q["step"])].append(q["t1"])
    phase_walls = defaultdict(list)
    for rec_round, start in zip(records, starts, strict=True):
        prev = start
        for step in steps:
            ends_ = posts.get((rec_round.round, step))
            if not ends_:
                continue
            phase_walls[step].append(max(ends_) - prev)
            prev = max(ends_)
    n_rounds = len(records)
    numbers = {r.round for r in records}
    work = defaultdict(list)  # kind -> seconds per (site, round); median over them
    http = defaultdict(list)
    bytes_site = []
    once: dict[str, list[float]] = defaultdict(list)
    for rec in hub.recorders:
        per = defaultdict(lambda: defaultdict(float))
        for w in rec.work:
            if w["kind"].startswith("sandbox start"):
                once[w["kind"]].append(w["t1"] - w["t0"])
            elif w["round"] in numbers:
                per[w["kind"]][w["round"]] += w["t1"] - w["t0"]
        for kind, by_round in per.items():
            work[kind] += list(by_round.values())
        up, down = defaultdict(int), defaultdict(int)
        seconds = defaultdict(lambda: defaultdict(float))
        for q in rec.requests:
            if q["step"] == "state":
                key = "state polls"
            elif q["step"] == "offset":
                key = "offset download"
            elif q["step"] in ("keys", "shares", "masked", "unmask", "update"):
                key = f"post {q['step']} (incl. its hold until the phase changes)"
            else:
                continue  # heartbeat, claim, artifact, lease, layout: once per run
            if q["round"] not in numbers:
                continue
            up[key] += q["up"]
            down[key] += q["down"]
            seconds[key][q["round"]] += q["t1"] - q["t0"]
        for key, by_round in seconds.items():
            http[key] += list(by_round.values())
        bytes_site.append({k: {"up": up[k] / n_rounds, "down": down[k] / n_rounds} for k in up})
    polls = [sum(1 for q in rec.requests if q["step"] == "state") / max(1, n_rounds) for rec in hub.recorders]
    post_counts: dict[str, int] = defaultdict(int)  # protocol posts in the aggregated rounds, by step
    for rec in hub.recorders:
        for q in rec.requests:
            if q["method"] == "POST" and q["step"] in ("keys", "shares", "masked", "unmask", "update"):
                post_counts[q["step"]] += 1
    per_site_round = max(1, n_rounds * len(hub.recorders))
    return {
        "secure_aggregation": secure,
        "rounds": n_rounds,
        "round_seconds": round_seconds,
        "median_round_seconds": statistics.median(round_seconds),
        "mean_round_seconds": statistics.fmean(round_seconds),
        "setup_seconds": starts[0] - result["t_approve"],
        "total_seconds": result["t_done"] - result["t_approve"],
        "phase_walls_median": {k: statistics.median(v) for k, v in phase_walls.items()},
        "site_work_median": {k: statistics.median(v) for k, v in work.items()},
        "once_per_run_median": {k: statistics.median(v) for k, v in once.items()},
        "once_per_run_count": {k: len(v) for k, v in once.items()},
        "http_seconds_per_round_median": {k: statistics.median(v) for k, v in http.items()},
        "bytes_per_site_round": bytes_site,
        "state_polls_per_site_round": statistics.fmean(polls),
        "posts_per_site_round": {k: v / per_site_round for k, v in sorted(post_counts.items())},
        "epsilon_hub": run.epsilon_spent,
        "threshold": run.threshold,
        "quantization_bits": run.quantization_bits,
        "clip_norm": run.clip_norm,
        "noise_multiplier": run.noise_multiplier,
        # Raw timeline (JSON only): each round's hub start/end and each site's requests and work,
        # in seconds since the first round's start; where a round's time goes, request by request.
        "timeline": {
            "rounds": [[r.round, s - starts[0], e - starts[0]] for r, s, e in zip(records, starts, ends, strict=True)],
            "sites": [
                [[q["method"], q["step"], q["round"], q["t0"] - starts[0], q["t1"] - starts[0]] for q in rec.requests]
                + [["work", w["kind"], w["round"], w["t0"] - starts[0], w["t1"] - starts[0]] for w in rec.work]
                for rec in hub.recorders
            ],
        },
    }


def bytes_summary(analysis: dict) -> dict:
    """Mean over sites of bytes per round: protocol payload (posts + offset) and state polls."""
    per = analysis["bytes_per_site_round"]
    out = {"protocol_up": 0.0, "protocol_down": 0.0, "polling_up": 0.0, "polling_down": 0.0}
    for site in per:
        for key, v in site.items():
            kind = "polling" if key == "state polls" else "protocol"
            out[f"{kind}_up"] += v["up"] / len(per)
            out[f"{kind}_down"] += v["down"] / len(per)
    return out


def fmt_bytes(n: float) -> str:
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:.2f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n:.0f} B"


def where_time_goes_table(analyses: dict[str, dict]) -> list[str]:
    """Markdown rows: phase walls and per-site work, median seconds per round, per run label."""
    labels = list(analyses)
    keys: list[tuple[str, str]] = []
    for a in analyses.values():
        for k in a["phase_walls_median"]:
            if ("phase", k) not in keys:
                keys.append(("phase", k))
    for a in analyses.values():
        for k in a["site_work_median"]:
            if ("work", k) not in keys:
                keys.append(("work", k))
    for a in analyses.values():
        for k in a["http_seconds_per_round_median"]:
            if ("http", k) not in keys:
                keys.append(("http", k))
    lines = [
        "| part (median s per round) | " + " | ".join(labels) + " |",
        "| --- |" + " ---: |" * len(labels),
    ]
    lines.append(
        "| **round wall (hub RoundRecord)** | "
        + " | ".join(f"**{analyses[x]['median_round_seconds']:.3f}**" for x in labels)
        + " |"
    )
    names = {
        "phase": "phase wall: {} (to the last site's post)",
        "work": "per site: {}",
        "http": "per site, HTTP: {}",
    }
    source = {
        "phase": "phase_walls_median",
        "work": "site_work_median",
        "http": "http_seconds_per_round_median",
    }
    for group, k in keys:
        vals = [analyses[x][source[group]].get(k) for x in labels]
        lines.append(
            f"| {names[group].format(k)} | "
            + " | ".join("–" if v is None else f"{v:.3f}" for v in vals)
            + " |"
        )
    lines.append(
        "| protocol posts per site per round (keys/shares/masked/unmask/update) | "
        + " | ".join("/".join(f"{analyses[x].get('posts_per_site_round', {}).get(k, 0):.2f}"
                              for k in ("keys", "shares", "masked", "unmask", "update")) for x in labels)
        + " |"
    )  # fmt: skip
    lines.append(
        "| state polls per site per round | "
        + " | ".join(f"{analyses[x]['state_polls_per_site_round']:.1f}" for x in labels)
        + " |"
    )
    lines.append(
        "| once per run: approve → round 0 (claim, artifact, sandbox start, layout) | "
        + " | ".join(f"{analyses[x]['setup_seconds']:.2f}" for x in labels)
        + " |"
    )
    starts = sorted({k for a in analyses.values() for k in a.get("once_per_run_median", {})})
    for k in starts:
        lines.append(
            f"| once per run, per site: {k} (median; sites) | "
            + " | ".join(
                f"{analyses[x]['once_per_run_median'][k]:.2f} ({analyses[x]['once_per_run_count'][k]})"
                if k in analyses[x].get("once_per_run_median", {}) else "–"
                for x in labels
            )
            + " |"
        )  # fmt: skip
    return lines


def write_json(path: Path | None, data: dict) -> None:
    if path is None:
        return

    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        return str(o)

    path.write_text(json.dumps(data, indent=2, default=default))


def time_it(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
