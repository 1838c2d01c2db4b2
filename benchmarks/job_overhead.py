"""What one evaluation job costs end to end, against the bare prediction it wraps.

    python benchmarks/job_overhead.py [--sizes 1000,100000,1000000] [--repeats 5] [--json out.json]
        [--modes cold,pool] [--formats sklearn,torchscript]

Sets up, in a temporary folder: a hub (SQLite, migrated) served by gunicorn on loopback (real
HTTP; Celery tasks run inline in the web process), one vendor, one site, one task per size.
Each site shard holds N synthetic rows with the breast-cancer schema: rows of the examples'
held-out split drawn with replacement, plus Gaussian noise of 1% of each feature's standard
deviation, keeping their real labels. The vendor uploads the sklearn example
(docs/examples/make_sklearn_model.py) over HTTP; the real agent (evaluator.agent.Agent, real
HubClient) runs one ``run_once()`` per job: heartbeat, claim, download + sha256, data load,
sandbox (the real runner image), validation, sufficient statistics + noise, ledger, result post.

Baseline, in this process, same data, same model: ``predict_proba`` on all N rows (joblib.load
excluded; TorchScript: the module on all N rows under ``inference_mode``). The ratio is
end-to-end job time / bare predict time, both medians of the same run; the slope ratio is
(job(N_max) - job(N_min)) / (bare(N_max) - bare(N_min)).

Modes: ``cold`` (the agent without its warm pool: every job creates and starts its container)
and ``pool`` (``Agent.start_pool()``; before each measured job the benchmark waits until the
pool holds a ready container, i.e. "pool warm"; the first job of each format runs cold and is a
warm-up). In pool mode the in-container split is "signal -> exit noticed" (the runtime was
imported before the job).

The split of the time comes from benchmark-side wrappers only: the agent's injection points
(sandbox runner, sha256 check, model preparation, predictions reader), a timed HubClient
subclass, timed Docker API calls, and the container's own StartedAt/FinishedAt. Two probe
containers with the same image and profile measure the interpreter start and the imports of
numpy + joblib + scikit-learn. No timing code lives in the agent or the sandbox driver.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "docs" / "examples"))

from _common import load_split  # noqa: E402

from evaluator import agent as agent_module  # noqa: E402
from evaluator import datasets, sandbox  # noqa: E402
from evaluator.agent import Agent  # noqa: E402
from evaluator.artifacts import prepare_model, verify_sha256  # noqa: E402
from evaluator.client import HubClient  # noqa: E402
from evaluator.config import load_config  # noqa: E402
from evaluator.outputs import load_predictions  # noqa: E402

N_FEATURES = 30


# --- timing plumbing (benchmark only) -----------------------------------------------------------


class Timeline:
    """Seconds per named part for the job being measured (parts may repeat: they add up)."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = defaultdict(float)
        self.facts: dict[str, float] = {}

    def reset(self) -> None:
        self.parts = defaultdict(float)
        self.facts = {}

    @contextlib.contextmanager
    def part(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] += time.perf_counter() - start

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            with self.part(name):
                return fn(*args, **kwargs)

        return timed


TIMELINE = Timeline()


def _kind_of(path: str) -> str:
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return last if not last.isdigit() else path


class TimedHubClient(HubClient):
    """The real client; each request's wall time is added to the timeline (not the artifact's
    streamed body: download_artifact is timed as a whole)."""

    def _request(self, method, path, data, **kwargs):
        kind = _kind_of(path)
        if kind in ("artifact", "lease"):  # download timed as a whole; renewals run beside the job
            return super()._request(method, path, data, **kwargs)
        if kind == "claim":
            TIMELINE.facts["claim start"] = time.perf_counter()
        with TIMELINE.part(f"http {kind}"):
            response = super()._request(method, path, data, **kwargs)
        if kind == "result":
            TIMELINE.facts["result end"] = time.perf_counter()
        return response


def _docker_time(value: str) -> datetime:
    # 2026-01-01T12:00:00.123456789Z -> microseconds
    head, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


def timed_docker_client():
    """A docker client whose API calls add to the timeline; keeps the last container State."""
    client = sandbox.get_client()
    api = client.api
    names = {
        "create_container": "docker create",
        "start": "docker start (API call)",
        "inspect_container": "docker inspect (polling)",
        "logs": "docker logs",
        "kill": "docker kill + wait + remove",
        "wait": "docker kill + wait + remove",
        "remove_container": "docker kill + wait + remove",
        "inspect_image": "docker image resolve",
    }
    for attr, label in names.items():
        original = getattr(api, attr)

        def make(original=original, label=label, attr=attr):
            def call(*args, **kwargs):
                with TIMELINE.part(label):
                    result = original(*args, **kwargs)
                if attr == "inspect_container":
                    state = result.get("State", {})
                    if not state.get("Running") and state.get("FinishedAt", "").startswith("2"):
                        started = _docker_time(state["StartedAt"])
                        finished = _docker_time(state["FinishedAt"])
                        TIMELINE.facts["in-container"] = (finished - started).total_seconds()
                return result

            return call

        setattr(api, attr, make())
    return client


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


def seed_hub(env: dict[str, str], sizes: list[int]) -> dict:
    """Owner, vendor, site and one open task per size, written straight to the hub's database."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from marketplace.accounts.services import organization_create, personal_token_create
    from marketplace.catalog.services import task_create, task_open
    from marketplace.sites.services import site_create

    users = get_user_model().objects
    owner = users.create_user(username="owner", password="bench-owner-pw-1")
    vendor = users.create_user(username="vendor", password="bench-vendor-pw-1")
    owner_org = organization_create(name="Bench Hospital", kind="data_owner", creator=owner)
    vendor_org = organization_create(name="Bench Vendor", kind="vendor", creator=vendor)
    _, vendor_token = personal_token_create(user=vendor, name="bench")
    site, site_token = site_create(organization=owner_org, name="bench-site", actor=owner)
    tasks = {}
    for n in sizes:
        spec = {
            "title": f"Breast cancer, {n} rows",
            "description": "Synthetic rows with the breast-cancer schema.",
            "task_type": "binary_classification",
            "input_spec": {"n_features": N_FEATURES, "dtype": "float32", "n_classes": 2},
            "metrics": [{"name": "roc_auc", "decimals": 4}, {"name": "accuracy", "decimals": 3}],
            "primary_metric": "roc_auc",
            "min_test_rows": 10,
            "quota_per_day": 1000,
            "resource_limits": {"memory_mb": 2048, "cpus": 1.0, "timeout_seconds": 600, "max_output_mb": 64},
        }
        task = task_create(organization=owner_org, actor=owner, spec=spec)
        tasks[n] = task_open(task=task, actor=owner).id
    del vendor_org
    from django.db import connections

    connections.close_all()
    return {"vendor_token": vendor_token, "site_token": site_token, "tasks": tasks}


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


def bare_predict_seconds(artifact: Path, features: np.ndarray, repeats: int, model_format: str = "sklearn") -> float:
    if model_format == "torchscript":
        import torch

        module = torch.jit.load(str(artifact), map_location="cpu")  # our own example: trusted
        module.eval()

        def predict(x: np.ndarray) -> object:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()
    else:
        import joblib

        predict = joblib.load(artifact).predict_proba  # our own example: trusted
    predict(features[:100])  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(features)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


# --- in-container probes ------------------------------------------------------------------------


def probe_container(image: str, code: str, work: Path, model: Path, features: Path) -> float:
    """In-container seconds (StartedAt→FinishedAt) of ``python3 -c code`` under the job profile."""
    client = timed_docker_client()
    limits = sandbox.Limits(memory_mb=2048, cpus=1.0, timeout_seconds=120, max_output_mb=64)
    prepared = sandbox.prepare_prediction(
        image_id=sandbox.resolve_image(client, image), model_path=model, model_format="sklearn",
        features_path=features, work_dir=work, limits=limits,
    )  # fmt: skip
    config = dict(prepared.config)
    config["entrypoint"] = ["python3"]
    config["command"] = ["-c", code]
    TIMELINE.reset()
    sandbox.execute(replace(prepared, config=config), limits=limits, client=client)
    return TIMELINE.facts["in-container"]


# --- main ---------------------------------------------------------------------------------------

PART_GROUPS = {
    "HTTP round trips (heartbeat, claim, result post)": ["http heartbeat", "http claim", "http result"],
    "artifact download + sha256 + copy": ["artifact download", "artifact sha256", "artifact prepare"],
    "features/labels load (+ fingerprint check)": ["data load"],
    "container create + start (API calls)": [
        "docker image resolve",
        "docker create",
        "docker start (API call)",
    ],
    "in container: interpreter start": ["~python start"],
    "in container: import numpy + joblib + sklearn": ["~imports"],
    "in container: unpickle + read features + predict + write": ["~model work"],
    "exit detection, logs, kill + remove": ["~sandbox other"],
    "predictions read + validate": ["predictions read"],
    "statistics + noise (the DP release)": ["statistics", "noise"],
    "ledger + local state (fsync)": ["ledger", "state"],
}


def run_job(agent: Agent) -> tuple[float, dict[str, float], dict[str, float]]:
    """One ``run_once()``: flush, heartbeat, pending work, claim, the job, the result post."""
    TIMELINE.reset()
    start = time.perf_counter()
    worked = agent.run_once()
    total = time.perf_counter() - start
    assert worked, "no job was queued"
    return total, dict(TIMELINE.parts), dict(TIMELINE.facts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the raw measurements here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--modes", default="cold,pool", help="cold, pool or both (comma-separated)")
    parser.add_argument("--formats", default="sklearn", help="sklearn, torchscript or both")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    formats = [f for f in args.formats.split(",") if f]

    from sandbox_images.build import ensure_runner_image

    image = ensure_runner_image()
    root = Path(tempfile.mkdtemp(prefix="vb-bench-"))
    print(f"work folder: {root}", file=sys.stderr)
    try:
        env = hub_env(root / "hub")
        (root / "hub").mkdir()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True)
        seed = seed_hub(env, sizes)
        artifacts = {"sklearn": build_model(root)}
        if "torchscript" in formats:
            artifacts["torchscript"] = build_torchscript_model(root)
        port = free_port()
        with running_hub(env, port, root / "gunicorn.log") as url:
            results = measure(url, seed, sizes, args.repeats, artifacts, image, root, modes=modes, formats=formats)
        results["machine"] = machine()
        results["command"] = " ".join([Path(sys.executable).name, *sys.argv])
        print(report(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def measure(
    url: str, seed: dict, sizes: list[int], repeats: int, artifacts: dict[str, Path], image: str, root: Path,
    *, modes: list[str], formats: list[str],
) -> dict:
    site = root / "site"
    site.mkdir()
    (site / "site-token").write_text(seed["site_token"])
    (site / "site.toml").write_text(
        f'hub_url = "{url}"\nsite_token_file = "site-token"\ndata_dir = "data"\nimage = "{image}"\n'
        "\n[limits]\nmax_memory_mb = 4096\nmax_cpus = 1.0\nmax_timeout_seconds = 1800\n"
    )
    config = load_config(site / "site.toml", env={})
    client = TimedHubClient.from_config(config)
    agent = Agent(
        config,
        client,
        verify_sha256=TIMELINE.wrap("artifact sha256", verify_sha256),
        prepare_model=TIMELINE.wrap("artifact prepare", prepare_model),
        load_predictions=TIMELINE.wrap("predictions read", load_predictions),
    )
    cold_runner = agent._sandbox()  # the agent's own cold path (sandbox_runtime applied)
    client.download_artifact = TIMELINE.wrap("artifact download", client.download_artifact)
    agent.ledger.append = TIMELINE.wrap("ledger", agent.ledger.append)
    for name in ("add_pending", "mark_posted", "is_posted", "pending"):
        setattr(agent.state, name, TIMELINE.wrap("state", getattr(agent.state, name)))
    # Module functions the agent calls through its module references.
    datasets.load_task_data = TIMELINE.wrap("data load", datasets.load_task_data)
    agent_module.sufficient_statistics = TIMELINE.wrap("statistics", agent_module.sufficient_statistics)
    agent_module.gaussian_release = TIMELINE.wrap("noise", agent_module.gaussian_release)

    features_of: dict[int, np.ndarray] = {}
    probe_features = None
    for i, n in enumerate(sizes):
        features, labels = synthetic_rows(n, seed=i)
        features_of[n] = features
        incoming = root / f"incoming-{n}"
        incoming.mkdir()
        np.save(incoming / "features.npy", features)
        np.save(incoming / "labels.npy", labels)
        task_id = seed["tasks"][n]
        meta = datasets.register_task_data(
            data_dir=config.data_dir, task_id=task_id, features_path=incoming / "features.npy",
            labels_path=incoming / "labels.npy",
            input_spec={"n_features": N_FEATURES, "n_classes": 2, "task_type": "binary_classification"},
        )  # fmt: skip
        client.register_shard(
            task_id=task_id, row_count=meta["row_count"], fingerprint=meta["fingerprint"],
            split_sizes=meta["split_sizes"],
        )  # fmt: skip
        if probe_features is None:
            probe_features = datasets.task_dir(config.data_dir, task_id) / "features" / "features.npy"

    per_mode: dict[str, dict] = {}
    for mode in modes:
        agent._sandbox_runner = None  # start_pool() keeps an injected runner
        pool = agent.start_pool() if mode == "pool" else None
        if mode == "pool" and pool is None:
            raise SystemExit("the pool did not start (pool_size = 0?)")
        timed_client = timed_docker_client()

        def timed_sandbox(pool=pool, timed_client=timed_client, **kwargs):
            runner = pool.run_prediction if pool is not None else cold_runner
            with TIMELINE.part("sandbox total"):
                run = runner(client=timed_client, **kwargs)
            TIMELINE.facts["sandbox duration_seconds"] = run.duration_seconds
            if pool is not None:
                TIMELINE.facts["pooled"] = 1.0
            return run

        agent._pool = None  # the agent calls the timed wrapper, which calls the pool
        agent._sandbox_runner = timed_sandbox
        per_format: dict[str, dict] = {}
        try:
            for fmt in formats:
                per_size = {}
                for i, n in enumerate(sizes):
                    task_id = seed["tasks"][n]
                    bare = bare_predict_seconds(artifacts[fmt], features_of[n], repeats, fmt)
                    if i == 0:  # warm-up: the format's first container; in pool mode it asks for the next
                        upload(url, seed["vendor_token"], task_id, artifacts[fmt], f"{mode}-{fmt}-warm-up", fmt)
                        run_job(agent)
                    jobs = []
                    for r in range(repeats):
                        upload(url, seed["vendor_token"], task_id, artifacts[fmt], f"{mode}-{fmt}-n{n}-r{r}", fmt)
                        if pool is not None and not pool.wait_warm(300):
                            raise SystemExit("the pool did not get warm")
                        total, parts, facts = run_job(agent)
                        jobs.append({"total": total, "parts": parts, "facts": facts})
                        print(
                            f"{mode:>4} {fmt:>11} {n:>9} rows  repeat {r + 1}/{repeats}: job {total:.3f}s, "
                            f"bare predict {bare:.4f}s",
                            file=sys.stderr,
                        )
                    per_size[n] = {"bare_predict": bare, "jobs": jobs}
                per_format[fmt] = {"sizes": {str(n): v for n, v in per_size.items()}}
        finally:
            if pool is not None:
                pool.close()
        per_mode[mode] = per_format

    # Interpreter start and imports, under the same profile (median of `repeats`).
    work = root / "probe"
    work.mkdir(mode=0o700)
    model_copy = prepare_model(artifacts["sklearn"], model_format="sklearn", dest=work / "model")
    python_start = statistics.median(
        probe_container(image, "pass", work, model_copy, probe_features) for _ in range(repeats)
    )
    imports = statistics.median(
        probe_container(image, "import numpy, joblib, sklearn.pipeline, sklearn.linear_model, sklearn.preprocessing",
                        work, model_copy, probe_features)
        for _ in range(repeats)
    )  # fmt: skip
    return {
        "modes": per_mode,
        "probes": {"python_start": python_start, "python_start_plus_imports": imports},
        "repeats": repeats,
    }


def split_parts(job: dict, probes: dict) -> dict[str, float]:
    parts = dict(job["parts"])
    in_container = job["facts"].get("in-container", 0.0)
    start, with_imports = probes["python_start"], probes["python_start_plus_imports"]
    if job["facts"].get("pooled"):  # started and imported before the job: signal -> exit noticed
        in_container = job["facts"].get("sandbox duration_seconds", 0.0)
        parts["~python start"] = parts["~imports"] = 0.0
        parts["~model work"] = in_container
    else:
        parts["~python start"] = min(start, in_container)
        parts["~imports"] = max(0.0, min(with_imports, in_container) - start)
        parts["~model work"] = max(0.0, in_container - with_imports)
    docker_named = sum(
        parts.get(k, 0.0) for k in ("docker image resolve", "docker create", "docker start (API call)")
    )
    parts["~sandbox other"] = max(0.0, parts.get("sandbox total", 0.0) - docker_named - in_container)
    grouped = {group: sum(parts.get(k, 0.0) for k in keys) for group, keys in PART_GROUPS.items()}
    grouped["other (agent loop, threads, unattributed)"] = job["total"] - sum(grouped.values())
    return grouped


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


def report(results: dict) -> str:
    probes = results["probes"]
    lines: list[str] = []
    for mode, per_format in results["modes"].items():
        for fmt, data in per_format.items():
            sizes = data["sizes"]
            lines += [
                f"### {mode} ({'warm pool' if mode == 'pool' else 'no pool'}), {fmt}",
                "",
                "| rows | bare predict (median) | end-to-end job (median) | ratio | claim -> result posted (median) "
                "| sandbox run (median) |",
                "| ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            breakdown = {}
            medians = {}
            for n, row in sizes.items():
                totals = [j["total"] for j in row["jobs"]]
                sandbox_runs = [j["facts"].get("sandbox duration_seconds", 0.0) for j in row["jobs"]]
                job = medians[n] = statistics.median(totals)
                claim_to_result = statistics.median(
                    j["facts"].get("result end", 0.0) - j["facts"].get("claim start", 0.0) for j in row["jobs"]
                )
                bare = row["bare_predict"]
                lines.append(
                    f"| {int(n):,} | {bare * 1000:.1f} ms | {job:.3f} s | {job / bare:,.0f}x | {claim_to_result:.3f} s "
                    f"| {statistics.median(sandbox_runs):.3f} s |"
                )
                split = [split_parts(j, probes) for j in row["jobs"]]
                breakdown[n] = {k: statistics.median(s[k] for s in split) for k in split[0]}
            if len(sizes) >= 2:
                lo, hi = min(sizes, key=int), max(sizes, key=int)
                bare_slope = sizes[hi]["bare_predict"] - sizes[lo]["bare_predict"]
                job_slope = medians[hi] - medians[lo]
                per_row = 1e6 / (int(hi) - int(lo))
                lines += [
                    "",
                    f"slope {int(lo):,} -> {int(hi):,} rows: job {job_slope * per_row:.3f} us/row, bare "
                    f"{bare_slope * per_row:.3f} us/row: **{job_slope / bare_slope:.2f}x** the bare predict's",
                ]
            lines += ["", "Where the time goes (median seconds per part):", ""]
            header = "| part | " + " | ".join(f"{int(n):,} rows" for n in breakdown) + " |"
            lines += [header, "| --- |" + " ---: |" * len(breakdown)]
            for part in next(iter(breakdown.values())):
                label = part
                if mode == "pool" and part.startswith("in container: unpickle"):
                    label = "in container: signal -> exit noticed (unpickle, read, predict, write)"
                lines.append(f"| {label} | " + " | ".join(f"{b[part]:.3f}" for b in breakdown.values()) + " |")
            lines.append("")
    lines += [
        f"probe containers (in-container seconds): interpreter start {probes['python_start']:.3f}, "
        f"with numpy + joblib + sklearn imports {probes['python_start_plus_imports']:.3f}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
