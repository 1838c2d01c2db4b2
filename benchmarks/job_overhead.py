"""What one evaluation job costs end to end, against the bare prediction it wraps.

    python benchmarks/job_overhead.py [--sizes 1000,100000,1000000] [--repeats 5] [--json out.json]
        [--modes cold,pool,compiled,first] [--formats sklearn,torchscript]

Sets up, in a temporary folder: a hub (SQLite, migrated) served by gunicorn on loopback (real
HTTP; Celery tasks run inline in the web process), one vendor, one site, one task per size.
Each site shard holds N synthetic rows with the breast-cancer schema: rows of the examples'
held-out split drawn with replacement, plus Gaussian noise of 1% of each feature's standard
deviation, keeping their real labels. The vendor uploads the sklearn example
(docs/examples/make_sklearn_model.py) over HTTP; the real agent (evaluator.agent.Agent, real
HubClient) runs one ``run_once()`` per job: heartbeat, claim, download + sha256, data load,
sandbox (the real runner image), validation, sufficient statistics + noise, ledger, result post.

Baseline, in this process, same data, same model: ``predict_proba`` on all N rows (joblib.load
excluded; TorchScript: the module on all N rows under ``inference_mode``), with as many BLAS /
OpenMP / torch threads as the sandbox gets (1: the tasks' ``cpus`` is 1.0), measured right before
and right after each size's jobs (the median of both; the same with this process's default
threads is reported beside). The ratio is end-to-end job time / bare predict time, both medians
of the same run; the slope ratio is (job(N_max) - job(N_min)) / (bare(N_max) - bare(N_min)).
After the jobs, ``STAGE_PROBE`` times the runner's own stages (imports, model load, features
read, read + predict, write) inside the runner image at N_max (``--no-stages`` skips it).

Modes: ``cold`` (the agent without its warm pool: every job creates and starts its container),
``pool`` (``Agent.start_pool()`` with ``compile_models = false``; before each measured job the
benchmark waits until the pool holds a ready container, i.e. "pool warm"; the first job of each
format runs cold and is a warm-up) and ``compiled`` (the same with ``compile_models = true``, the
agent's default: the warm-up job converts the scikit-learn model, the measured jobs run its
numpy-only form; TorchScript is unchanged by it) and ``first`` (the same, but every measured job
is its artifact's first on the shard: the agent's kept forms are forgotten before each, so the
job reads or converts the model and predicts with the form, as a new submission's job does). In pool mode the in-container split is "signal -> exit noticed" (the runtime was
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
import shutil
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_common import (  # noqa: E402  (re-exported: federated_common.py and attacks/live.py take them from here)
    N_FEATURES,
    REPO,
    build_model,
    build_torchscript_model,
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

from evaluator import agent as agent_module  # noqa: E402
from evaluator import datasets, sandbox  # noqa: E402
from evaluator.agent import Agent  # noqa: E402
from evaluator.artifacts import prepare_model, verify_sha256  # noqa: E402
from evaluator.client import HubClient  # noqa: E402
from evaluator.compiled_models import CompiledCache  # noqa: E402
from evaluator.config import load_config  # noqa: E402
from evaluator.outputs import load_predictions  # noqa: E402

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


def seed_hub(env: dict[str, str], sizes: list[int]) -> dict:
    """Owner, vendor, site and one open task per size, written straight to the hub's database."""
    people = seed_people(env, 1)
    limits = {"memory_mb": 2048, "cpus": 1.0, "timeout_seconds": 600, "max_output_mb": 64}
    tasks = {n: open_task(people, title=f"Breast cancer, {n} rows", quota=1000, limits=limits) for n in sizes}
    close_db()
    return {"vendor_token": people["vendor_token"], "site_token": people["site_tokens"][0], "tasks": tasks}


# --- data and model -----------------------------------------------------------------------------


SANDBOX_THREADS = 1  # the sandbox's BLAS/OpenMP/torch threads: ceil(cpus) of seed_hub's limits (1.0)


def bare_predict_times(
    artifact: Path, features: np.ndarray, repeats: int, model_format: str = "sklearn", threads: int | None = None
) -> list[float]:
    """Seconds of each of ``repeats`` predicts on all rows in this process. ``threads``: as many
    BLAS/OpenMP (scikit-learn) or intra-op (torch) threads as the sandbox gets, so that the
    baseline computes with what the job computes with; None: this process's default."""
    from threadpoolctl import threadpool_limits

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
    torch_threads = None
    if model_format == "torchscript" and threads is not None:
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            predict(features[:100])  # warm
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                predict(features)
                times.append(time.perf_counter() - start)
    finally:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
    return times


def bare_predict_seconds(artifact: Path, features: np.ndarray, repeats: int, model_format: str = "sklearn") -> float:
    """Median of ``bare_predict_times`` with the sandbox's threads."""
    return statistics.median(bare_predict_times(artifact, features, repeats, model_format, SANDBOX_THREADS))


# The runner's stages at one size, inside the runner image under the job's profile (the same
# functions the runner calls, timed one after the other): where the container's time goes.
STAGE_PROBE = """
import json, time
from pathlib import Path
clock = time.perf_counter
t, start = {}, clock()
try:  # the runner's own import hooks, as `python -m runner` installs them first
    from runner import light_imports
    light_imports.install()
except ImportError:
    pass
from runner.loaders import warm_imports
from runner.predict import FeatureFile, load_model, predict_batches, write_predictions
warm_imports(FORMAT)
t["imports"] = clock() - start; start = clock()
predict = load_model(FORMAT, Path(MODEL))
t["load model"] = clock() - start; start = clock()
features = FeatureFile(Path("/data/features.npy"))
for _ in features.batches(BATCH):
    pass
t["read features alone"] = clock() - start; start = clock()
predictions = predict_batches(predict, features.batches(BATCH), features.n_rows)
t["read + predict"] = clock() - start; start = clock()
write_predictions(Path("/out/predictions.npy"), predictions)
t["write predictions"] = clock() - start
print("STAGES " + json.dumps(t))
"""


# --- in-container probes ------------------------------------------------------------------------


def probe_container(
    image: str, code: str, work: Path, model: Path, features: Path, model_format: str = "sklearn"
) -> tuple[float, str]:
    """In-container seconds (StartedAt→FinishedAt) of ``python3 -c code`` under the job profile,
    and its output."""
    client = timed_docker_client()
    limits = sandbox.Limits(memory_mb=2048, cpus=1.0, timeout_seconds=120, max_output_mb=64)
    prepared = sandbox.prepare_prediction(
        image_id=sandbox.resolve_image(client, image), model_path=model, model_format=model_format,
        features_path=features, work_dir=work, limits=limits,
    )  # fmt: skip
    config = dict(prepared.config)
    config["entrypoint"] = ["python3"]
    config["command"] = ["-c", code]
    TIMELINE.reset()
    run = sandbox.execute(replace(prepared, config=config), limits=limits, client=client)
    return TIMELINE.facts["in-container"], run.logs


def stage_probe(image: str, work: Path, artifact: Path, features: Path, model_format: str, batch_size: int) -> dict:
    """``STAGE_PROBE`` in the runner image: seconds per runner stage on ``features``."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700, parents=True)
    model = prepare_model(artifact, model_format=model_format, dest=work / "model")
    header = (
        f"FORMAT = {model_format!r}\nMODEL = {sandbox.MODEL_TARGETS[model_format]!r}\nBATCH = {batch_size}\n"
    )
    _, logs = probe_container(image, header + STAGE_PROBE, work, model, features, model_format)
    line = next(x for x in logs.splitlines() if x.startswith("STAGES "))
    return json.loads(line[len("STAGES ") :])


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
    "probabilities normalised (class_probabilities)": ["probabilities"],
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
    parser.add_argument("--modes", default="cold,pool,compiled", help="cold, pool, compiled, first (comma-separated)")
    parser.add_argument("--formats", default="sklearn", help="sklearn, torchscript or both")
    parser.add_argument(
        "--no-stages", action="store_true", help="skip the in-container stage probe (a runner older than FeatureFile)"
    )
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
            results = measure(
                url, seed, sizes, args.repeats, artifacts, image, root, modes=modes, formats=formats,
                stages=not args.no_stages,
            )  # fmt: skip
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
    *, modes: list[str], formats: list[str], stages: bool = True,
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
    agent_module.metrics.class_probabilities = TIMELINE.wrap("probabilities", agent_module.metrics.class_probabilities)

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
        agent.config = replace(config, compile_models=mode in ("compiled", "first"))
        pool = agent.start_pool() if mode in ("pool", "compiled", "first") else None
        if mode != "cold" and pool is None:
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
                    bare_times = bare_predict_times(artifacts[fmt], features_of[n], repeats, fmt, SANDBOX_THREADS)
                    if i == 0:  # warm-up: the format's first container; in pool mode it asks for the next
                        upload(url, seed["vendor_token"], task_id, artifacts[fmt], f"{mode}-{fmt}-warm-up", fmt)
                        run_job(agent)
                    jobs = []
                    for r in range(repeats):
                        upload(url, seed["vendor_token"], task_id, artifacts[fmt], f"{mode}-{fmt}-n{n}-r{r}", fmt)
                        if mode == "first" and pool is not None:  # as if a new artifact: no kept form
                            pool.compiled = CompiledCache(pool.dir / f"compiled-first-{n}-{r}")
                        if pool is not None and not pool.wait_warm(300):
                            raise SystemExit("the pool did not get warm")
                        total, parts, facts = run_job(agent)
                        jobs.append({"total": total, "parts": parts, "facts": facts})
                        print(
                            f"{mode:>4} {fmt:>11} {n:>9} rows  repeat {r + 1}/{repeats}: job {total:.3f}s, "
                            f"bare predict {statistics.median(bare_times):.4f}s",
                            file=sys.stderr,
                        )
                    # The baseline again after the jobs (same process, same data): drift shows, and the
                    # median of both halves is the run's figure. Unpinned threads: reported beside.
                    bare_times += bare_predict_times(artifacts[fmt], features_of[n], repeats, fmt, SANDBOX_THREADS)
                    default = bare_predict_times(artifacts[fmt], features_of[n], repeats, fmt, None)
                    per_size[n] = {
                        "bare_predict": statistics.median(bare_times), "bare_predict_times": bare_times,
                        "bare_predict_default_threads": statistics.median(default), "jobs": jobs,
                    }  # fmt: skip
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
        probe_container(image, "pass", work, model_copy, probe_features)[0] for _ in range(repeats)
    )
    imports = statistics.median(
        probe_container(image, "import numpy, joblib, sklearn.pipeline, sklearn.linear_model, sklearn.preprocessing",
                        work, model_copy, probe_features)[0]
        for _ in range(repeats)
    )  # fmt: skip
    per_stage = {}
    largest = datasets.task_dir(config.data_dir, seed["tasks"][max(sizes)]) / "features" / "features.npy"
    for fmt in formats if stages else []:
        runs = [
            stage_probe(image, root / f"stages-{fmt}", artifacts[fmt], largest, fmt, config.batch_size)
            for _ in range(repeats)
        ]
        per_stage[fmt] = {"rows": max(sizes), **{k: statistics.median(r[k] for r in runs) for k in runs[0]}}
    return {
        "modes": per_mode,
        "stages": per_stage,
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


MODE_TITLES = {
    "cold": "no pool",
    "pool": "warm pool",
    "compiled": "warm pool + compiled models: sklearn jobs after the first run the numpy-only form",
    "first": "warm pool + compiled models, every job its artifact's first: the model read or converted, then the form",
}


def report(results: dict) -> str:
    probes = results["probes"]
    lines: list[str] = []
    for mode, per_format in results["modes"].items():
        for fmt, data in per_format.items():
            sizes = data["sizes"]
            lines += [
                f"### {mode} ({MODE_TITLES.get(mode, mode)}), {fmt}",
                "",
                "| rows | bare predict, sandbox's threads (median) | bare, default threads | end-to-end job (median) "
                "| ratio | claim -> result posted (median) | sandbox run (median) |",
                "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
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
                    f"| {int(n):,} | {bare * 1000:.1f} ms | {row.get('bare_predict_default_threads', 0.0) * 1000:.1f} ms "
                    f"| {job:.3f} s | {job / bare:,.0f}x | {claim_to_result:.3f} s "
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
                if "bare_predict_default_threads" in sizes[hi]:
                    default_slope = sizes[hi]["bare_predict_default_threads"] - sizes[lo]["bare_predict_default_threads"]
                    lines.append(
                        f"(against the bare predict with this process's default threads, "
                        f"{default_slope * per_row:.3f} us/row: {job_slope / default_slope:.2f}x)"
                    )
            lines += ["", "Where the time goes (median seconds per part):", ""]
            header = "| part | " + " | ".join(f"{int(n):,} rows" for n in breakdown) + " |"
            lines += [header, "| --- |" + " ---: |" * len(breakdown)]
            for part in next(iter(breakdown.values())):
                label = part
                if mode != "cold" and part.startswith("in container: unpickle"):
                    label = "in container: signal -> exit noticed (unpickle, read, predict, write)"
                lines.append(f"| {label} | " + " | ".join(f"{b[part]:.3f}" for b in breakdown.values()) + " |")
            lines.append("")
    for fmt, stages in results.get("stages", {}).items():
        rows = stages.pop("rows", 0)
        lines += [
            f"runner stages in the runner image, {fmt}, {rows:,} rows (median seconds): "
            + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()),
            "",
        ]
    lines += [
        f"probe containers (in-container seconds): interpreter start {probes['python_start']:.3f}, "
        f"with numpy + joblib + sklearn imports {probes['python_start_plus_imports']:.3f}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
