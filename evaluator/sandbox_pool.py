"""A warm pool of fresh sandboxes: containers started ahead, each taking exactly one job.

A cold prediction run pays, after the job is claimed, for creating and starting a container and
for importing the runtime in it (about a second for scikit-learn). The pool pays both before:
per (runner image, model format, resource limits, OCI runtime) it keeps up to ``size``
containers started with ``python -m runner pooled``, which imports the format's runtime, says so
(``/out/.ready``) and waits for a request file in its job folder (``evaluator/runner/pooled.py``).
A job takes one container, places the model and the features in that container's job folder,
then the request, and watches the container exactly as a cold run is watched; the container then exits and is
removed, and a background thread starts its replacement.

Security decisions (SECURITY.md section 1 holds unchanged):

- the profile is the cold run's: ``pooled_container_config`` starts from
  ``sandbox.container_config`` and changes only the command and the mounts (a unit test pins the
  rest equal, and tests/sandbox probes a pooled container as it probes a cold one);
- one fresh container per job, never reused: a container is taken from the pool once and removed
  after its job whatever happened; nothing of one job's container (its tmpfs, processes, job
  folder, output folder) is visible to another's;
- the job folder is mounted read-only at ``/job``; the host writes the inputs there (hard links
  or copies into a folder only the agent can write) before it signals; ``/out`` is the one
  writable path that survives, read by the host only after the container has exited;
- the container cannot write a request: ``/job`` is read-only and the host's; ``.ready`` is
  trusted only before the job is placed, when no vendor code has run in the container;
- a pooled container that died before its job was signalled never saw a model or a row: it is
  discarded and the job runs cold, so the pool never turns its own trouble into a job failure;
- a pool folder is locked like a job folder (``evaluator.workdirs``), so the agent's orphan sweep
  removes a dead agent's pooled containers and leaves a live agent's alone.

Compiled models (``evaluator/compiled_models.py``): the first scikit-learn job of an artifact on
a shard also asks its sandbox for the model's numpy-only form; once checked and kept, later jobs
of that artifact on that shard run it in a pooled container of the ``compiled`` key, which
imports numpy only. The security argument is in that module. A linear model's first job needs no
scikit-learn either (``evaluator/runner/plain_sklearn.py``), so while the last scikit-learn job's
model had a form, the ``sklearn`` key's containers warm only that plain reader; after a model that
needed scikit-learn they warm scikit-learn again (its import is most of such a job's CPU, and a
container warmed for the other kind still runs any job, only slower).

While a job runs, the pool starts and removes nothing: on two cores, a container being created
beside the job's doubled the time from the job's exit to the engine noticing it (0.06 -> 0.14 s).
The job's replacement is started once the job is over (``job_running``: the agent holds it until
the result is posted).

The memory bound (``memory_mb``) caps the sum of the memory *limits* of the idle containers: the
most the idle pool could ever hold (an idle container uses 80-150 MiB). Keys used least recently
give their containers up first.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

from evaluator import sandbox
from evaluator.compiled_models import CompiledCache, n_features_of
from evaluator.sandbox import (
    COMPILED_NAME,
    OUTPUT_TARGET,
    PREDICTIONS_NAME,
    RUNNER_FORMATS,
    SANDBOX_LABEL,
    Limits,
    SandboxError,
    SandboxRun,
    SandboxUnavailable,
)

log = logging.getLogger(__name__)

POOL_LABEL: Final = "vaultbench.pool"
JOB_TARGET: Final = "/job"
REQUEST_NAME: Final = "request.json"  # what the runner waits for (evaluator/runner/pooled.py)
READY_NAME: Final = ".ready"  # the runner's "imports done" marker in /out, removed before the job
FEATURES_NAME: Final = "features.npy"
OFFSET_NAME: Final = "weights_offset.safetensors"
MODEL_NAMES: Final = {
    "torchscript": "model.pt",
    "sklearn": "model.joblib",
    "onnx": "model.onnx",
    "python_package": "model",
    "compiled": "model",
}
READY_TIMEOUT_SECONDS: Final = 120.0  # imports on a busy machine; a dead container ends it sooner
READY_POLL_SECONDS: Final = (0.001, 0.025)  # from, growing to: quick when nearly ready, cheap when not
# A pooled runner exits after IDLE_EXIT_SECONDS (evaluator/runner/pooled.py) without a job, so
# containers of a dead agent do not wait forever; the pool retires its own well before that.
RETIRE_SECONDS: Final = 900.0
MAX_COMPILE_BYTES: Final = 64 * 1024 * 1024  # a bigger scikit-learn artifact is never converted
STATE_CHECK_SECONDS: Final = 0.5  # is a not-yet-ready container still alive (an engine call: not too often)


@dataclass(frozen=True)
class PoolKey:
    """What a pooled container is interchangeable for."""

    image_id: str
    model_format: str
    limits: Limits
    runtime: str


@dataclass(frozen=True)
class Slot:
    """One pre-started container and its folders (``mount_dir`` holds both)."""

    key: PoolKey
    container_id: str
    mount_dir: Path
    job_dir: Path
    out_dir: Path
    started: float = 0.0  # time.monotonic() when the container was started

    @property
    def ready(self) -> bool:
        return os.path.lexists(self.out_dir / READY_NAME)


class SlotUnusable(Exception):
    """The pooled container cannot take the job; it never saw the job's inputs run."""


def pooled_container_config(
    *, key: PoolKey, job_dir: Path, out_dir: Path, name: str | None = None, plain_sklearn: bool = False
) -> dict[str, Any]:
    """The ``containers.create`` kwargs of a pooled container (pure: no Docker calls): the cold
    run's profile for the same limits, with the job folder mounted read-only at ``/job``.
    ``plain_sklearn``: a scikit-learn runner warms the plain reader, not scikit-learn."""
    if key.model_format not in RUNNER_FORMATS:
        raise ValueError(f"unknown model format {key.model_format!r}")
    config = sandbox.container_config(
        image_id=key.image_id,
        model_path=job_dir / MODEL_NAMES[key.model_format],
        model_format=key.model_format,
        features_path=job_dir / FEATURES_NAME,
        out_dir=out_dir,
        limits=key.limits,
        name=name or f"vb-pool-{uuid.uuid4().hex[:16]}",
    )
    config.update(
        command=["pooled", "--format", key.model_format, "--job", JOB_TARGET,
                 "--output", f"{OUTPUT_TARGET}/{PREDICTIONS_NAME}",
                 *(["--plain-sklearn"] if plain_sklearn and key.model_format == "sklearn" else [])],
        labels={SANDBOX_LABEL: "1", POOL_LABEL: "1"},
        mounts=[
            Mount(target=JOB_TARGET, source=str(job_dir), type="bind", read_only=True),
            Mount(target=OUTPUT_TARGET, source=str(out_dir), type="bind", read_only=False),
        ],
    )  # fmt: skip
    if key.runtime != "runc":
        config["runtime"] = key.runtime
    return config


def _engine_errors() -> tuple[type[BaseException], ...]:
    return (docker.errors.DockerException, requests.exceptions.RequestException)


class WarmPool:
    """Pre-started sandboxes for an agent. ``run_prediction`` has ``sandbox.run_prediction``'s
    signature and falls back to a cold run when no container of the job's key is pooled."""

    def __init__(
        self,
        *,
        work_root: Path,
        size: int = 1,
        memory_mb: int = 4096,
        runtime: str = "runc",
        client_factory: Any = None,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
        compile_models: bool = False,
    ) -> None:
        from evaluator.workdirs import claim_work_dir

        if size < 0 or memory_mb < 0:
            raise ValueError("pool size and memory must not be negative")
        self.size = size
        self.memory_mb = memory_mb
        self.runtime = runtime
        self.ready_timeout = ready_timeout
        self.compile_models = compile_models  # the agent turns it on (site setting compile_models)
        # What a pooled scikit-learn runner imports ahead: the plain reader while the site's last
        # scikit-learn job's model had a compiled form (no scikit-learn needed), else scikit-learn.
        self._warm_plain_sklearn = compile_models
        self._client_factory = client_factory or sandbox.get_client
        self._job_client: Any = None
        work_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir = work_root / f"pool-{uuid.uuid4().hex}"
        self.dir.mkdir(mode=0o700)
        self._dir_lock = claim_work_dir(self.dir)
        self._idle: dict[PoolKey, deque[Slot]] = {}
        self._recent: OrderedDict[PoolKey, None] = OrderedDict()  # least recently used first
        self._trash: deque[Slot] = deque()
        self._running = 0  # jobs in flight: the refill waits for them
        self.compiled = CompiledCache(self.dir / "compiled")
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._refill_loop, name="sandbox-pool", daemon=True)
        self._thread.start()
        # An agent that exits without close() (its threads are daemons) still removes its pool.
        atexit.register(self.close)

    # -- the job's side -------------------------------------------------------------------------

    def run_prediction(
        self,
        *,
        image: str,
        model_path: Path,
        model_format: str,
        features_path: Path,
        limits: Limits,
        client: docker.DockerClient | None = None,
        weights_offset_path: Path | None = None,
        **job: Any,
    ) -> SandboxRun:
        """``sandbox.run_prediction`` in a pooled container (``job``: ``work_dir``, ``batch_size``)."""
        if client is None:  # one client for the jobs (the agent runs one at a time), one for the refill
            client = self._job_client = self._job_client or self._client_factory()
        # The agent passes the id it pinned for the job; a tag is resolved here.
        image_id = image if image.startswith("sha256:") else sandbox.resolve_image(client, image)
        convert_key = None
        if (
            self.compile_models and model_format == "sklearn" and weights_offset_path is None
            and model_path.stat().st_size <= MAX_COMPILE_BYTES  # hashed per job; linear models are small
        ):  # fmt: skip
            convert_key = self.compiled.key(model_path=model_path, features_path=features_path, image_id=image_id)
            compiled = self.compiled.get(convert_key)
            if compiled is not None:  # this artifact's checked numpy-only form, for this shard
                model_format, model_path, convert_key = "compiled", compiled, None
        with self.job_running():
            run = self._run(
                PoolKey(image_id, model_format, limits, self.runtime), client=client, model_path=model_path,
                features_path=features_path, weights_offset_path=weights_offset_path,
                compile_model=convert_key is not None, **job,
            )  # fmt: skip
        kept = convert_key is not None and self._keep_compiled(convert_key, run, features_path)
        if convert_key is not None:
            self._warm_plain_sklearn = kept
        if kept:
            compiled_key = PoolKey(image_id, "compiled", limits, self.runtime)
            with self._cond:  # the artifact's next job will want a numpy-only container: start one
                self._recent.pop(compiled_key, None)
                self._recent[compiled_key] = None
                self._cond.notify_all()
        return run

    def _run(
        self, key: PoolKey, *, client: Any, model_path: Path, features_path: Path, work_dir: Path, batch_size: int = 4096,
        weights_offset_path: Path | None = None, compile_model: bool = False,
    ) -> SandboxRun:  # fmt: skip
        slot = self._take(key)
        if slot is not None:
            try:
                self._place(slot, model_path, features_path, weights_offset_path)
                self._signal(slot, client, batch_size=batch_size, offset=weights_offset_path is not None,
                             compile_model=compile_model)  # fmt: skip
            except SlotUnusable as exc:
                log.warning("pooled sandbox unusable (%s); running this job cold", exc)
                self._discard(slot)
            except BaseException:
                self._discard(slot)  # never left in the pool half-placed
                raise
            else:
                return self._watch(slot, client, limits=key.limits, work_dir=work_dir)
        return self._run_cold(
            image_id=key.image_id, model_path=model_path, model_format=key.model_format,
            features_path=features_path, work_dir=work_dir, limits=key.limits, batch_size=batch_size,
            client=client, weights_offset_path=weights_offset_path, compile_model=compile_model,
        )  # fmt: skip

    def _keep_compiled(self, convert_key: str, run: SandboxRun, features_path: Path) -> bool:
        """Check and keep what the run left in ``/out/compiled``; the folder is removed either way,
        so the output folder holds the predictions alone, as the job's reader requires."""
        left = Path(run.predictions_path).parent / COMPILED_NAME
        if not os.path.lexists(left):
            return False
        try:
            kept = self.compiled.store(convert_key, left, n_features=n_features_of(features_path))
            if kept:
                log.info("compiled form kept: later jobs of this artifact on this shard import numpy only")
            return kept
        except Exception as exc:  # the job's own result does not depend on it
            log.warning("compiled form not kept: %s", exc)
            return False
        finally:
            if os.path.lexists(left):
                if os.path.isdir(left) and not os.path.islink(left):
                    shutil.rmtree(left, ignore_errors=True)
                else:
                    os.unlink(left)

    @contextlib.contextmanager
    def job_running(self) -> Iterator[None]:
        """Holds the refill back while a job runs (see the module's docstring). ``run_prediction``
        holds it for the container's run; the agent holds it for the whole job, so the next
        container starts after the result is posted rather than beside the job's last steps."""
        with self._cond:
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def _run_cold(self, *, image_id: str, limits: Limits, client: Any, **kwargs: Any) -> SandboxRun:
        from dataclasses import replace

        if self.runtime != "runc":
            from evaluator.sandbox_runtime import engine_runtimes

            if self.runtime not in engine_runtimes(client):
                raise SandboxUnavailable(f"the engine has no {self.runtime!r} runtime (see evaluator/sandbox_runtime.py)")
        prepared = sandbox.prepare_prediction(image_id=image_id, limits=limits, **kwargs)
        if self.runtime != "runc":
            prepared = replace(prepared, config={**prepared.config, "runtime": self.runtime})
        return sandbox.execute(prepared, limits=limits, client=client)

    def _take(self, key: PoolKey) -> Slot | None:
        with self._cond:
            self._recent.pop(key, None)
            self._recent[key] = None
            idle = self._idle.get(key)
            slot = None
            while idle and slot is None:
                slot = idle.popleft()
                if time.monotonic() - slot.started > RETIRE_SECONDS:  # near its runner's idle exit
                    self._trash.append(slot)
                    slot = None
            self._cond.notify_all()  # refill (or start filling for a new key)
            return slot

    def _place(self, slot: Slot, model_path: Path, features_path: Path, offset_path: Path | None) -> None:
        """The job's inputs into the container's (read-only to it) job folder."""
        for path in (model_path, features_path, *([offset_path] if offset_path else [])):
            sandbox._check_readable_by_sandbox(path)
        sandbox.check_model_path(slot.key.model_format, model_path)
        if offset_path is not None and slot.key.model_format not in sandbox.TRAINABLE_FORMATS:
            raise SandboxUnavailable(f"a weights offset cannot apply to {slot.key.model_format}")
        sandbox.stage_input(model_path, slot.job_dir / MODEL_NAMES[slot.key.model_format])
        sandbox.stage_input(features_path, slot.job_dir / FEATURES_NAME)
        if offset_path is not None:
            sandbox.stage_input(offset_path, slot.job_dir / OFFSET_NAME)

    def _signal(self, slot: Slot, client: Any, *, batch_size: int, offset: bool, compile_model: bool = False) -> None:
        """Wait until the runner has its imports done, then place the request. Raises
        ``SlotUnusable`` if the container ended (or never got ready) before that: no vendor code
        has run in it yet, so ``.ready`` is the runner's own word."""
        request = json.dumps({"batch_size": batch_size, "weights_offset": offset, "compile": compile_model}).encode()
        deadline = time.monotonic() + self.ready_timeout
        next_check = time.monotonic() + STATE_CHECK_SECONDS
        pause, longest = READY_POLL_SECONDS
        while True:
            ready = slot.ready
            now = time.monotonic()
            if ready or now >= next_check:  # and once more when ready: it may have died since
                next_check = now + STATE_CHECK_SECONDS
                try:
                    running = client.api.inspect_container(slot.container_id)["State"]["Running"]
                except _engine_errors() as exc:
                    raise SlotUnusable(f"docker engine error: {exc}") from None
                if not running:
                    raise SlotUnusable("the pooled container ended before its job")
            if ready:
                break
            if now >= deadline:
                raise SlotUnusable("the pooled runner did not get ready in time")
            time.sleep(pause)
            pause = min(longest, pause * 1.5)
        (slot.out_dir / READY_NAME).unlink(missing_ok=True)  # /out holds only what the job writes
        tmp = slot.job_dir / f".{REQUEST_NAME}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(request)
        os.chmod(tmp, 0o644)  # the sandbox user reads it whatever the umask
        os.replace(tmp, slot.job_dir / REQUEST_NAME)  # atomic: the runner never reads half of it

    def _watch(self, slot: Slot, client: Any, *, limits: Limits, work_dir: Path) -> SandboxRun:
        """Watch the signalled container like a cold run; hand its output folder to the job."""
        try:
            run = sandbox.watch_and_finish(
                client, slot.container_id, slot.out_dir, limits=limits, started=time.monotonic()
            )
            # The container has exited: nothing writes to the folder any more. Into the job's own
            # work folder, which the agent removes with the job.
            out_dir = work_dir / f"out-{uuid.uuid4().hex}"
            shutil.move(str(slot.out_dir), str(out_dir))
            return SandboxRun(
                predictions_path=out_dir / PREDICTIONS_NAME, exit_code=run.exit_code, logs=run.logs,
                duration_seconds=run.duration_seconds, container_id=run.container_id,
            )  # fmt: skip
        except SandboxError:
            raise
        except _engine_errors() as exc:
            raise SandboxUnavailable(f"docker engine error: {exc}") from exc
        finally:
            self._discard(slot)

    def _discard(self, slot: Slot) -> None:
        """Hand a used (or unusable) container to the pool's thread, which kills and removes it
        and its folders. It never takes a job again."""
        with self._cond:
            self._trash.append(slot)
            self._cond.notify_all()

    # -- the pool's side -------------------------------------------------------------------------

    def _refill_loop(self) -> None:
        client = None
        failures = 0
        while True:
            with self._cond:
                while not self._closed and (self._running or (not self._trash and self._next_key() is None)):
                    self._cond.wait(1.0)
                if self._closed:
                    break
                # A waiting job's next container first; removals after.
                key = self._next_key()
                trash = self._trash.popleft() if key is None and self._trash else None
                if key is not None:
                    self._make_room(key)
            try:
                client = client or self._client_factory()
                if trash is not None:
                    self._remove_slot(trash, client)
                if key is not None:
                    slot = self._start_slot(key, client)
                    with self._cond:
                        if self._closed:
                            self._trash.append(slot)
                        else:
                            self._idle.setdefault(key, deque()).append(slot)
                failures = 0
            except Exception as exc:  # the engine away, the image removed: back off, keep serving
                failures += 1
                log.warning("sandbox pool: %s; retrying", exc)
                with self._cond:
                    if key is not None:  # stop warming this key until a job asks again
                        self._recent.pop(key, None)
                    self._cond.wait(min(30.0, 0.5 * 2**failures))
        with self._cond:
            leftovers = [s for q in self._idle.values() for s in q] + list(self._trash)
            self._idle.clear()
            self._trash.clear()
        for slot in leftovers:
            try:
                self._remove_slot(slot, client or self._client_factory())
            except Exception as exc:
                log.warning("sandbox pool: could not remove %s: %s", slot.container_id[:12], exc)

    def _idle_memory(self) -> int:
        return sum(s.key.limits.memory_mb for q in self._idle.values() for s in q)

    def _next_key(self) -> PoolKey | None:
        """The most recently used key that lacks containers and fits the memory bound (after
        giving up idle containers of keys used less recently). Caller holds the lock."""
        for key in reversed(self._recent):
            if len(self._idle.get(key, ())) >= self.size:
                continue
            older = 0
            for other in self._recent:
                if other == key:
                    break
                older += sum(s.key.limits.memory_mb for s in self._idle.get(other, ()))
            if self._idle_memory() - older + key.limits.memory_mb <= self.memory_mb:
                return key
        return None

    def _make_room(self, key: PoolKey) -> None:
        """Give up idle containers of older keys until ``key``'s next one fits. Holds the lock."""
        for other in list(self._recent):
            if self._idle_memory() + key.limits.memory_mb <= self.memory_mb or other == key:
                break
            idle = self._idle.get(other)
            while idle and self._idle_memory() + key.limits.memory_mb > self.memory_mb:
                self._trash.append(idle.pop())

    def _container_config(self, *, key: PoolKey, job_dir: Path, out_dir: Path) -> dict[str, Any]:
        """The ``containers.create`` kwargs of one pooled container (a subclass's own kind)."""
        return pooled_container_config(key=key, job_dir=job_dir, out_dir=out_dir,
                                       plain_sklearn=self._warm_plain_sklearn)  # fmt: skip

    def _start_slot(self, key: PoolKey, client: Any) -> Slot:
        mount_dir = sandbox.make_mount_dir(self.dir).resolve()
        job_dir = mount_dir / "job"
        job_dir.mkdir()
        job_dir.chmod(0o755)  # the sandbox user reads the job's inputs; only the agent writes
        out_dir = sandbox.make_output_dir(mount_dir)
        config = self._container_config(key=key, job_dir=job_dir, out_dir=out_dir)
        container_id = ""
        try:
            container_id = str(client.containers.create(**config).id)
            client.api.start(container_id)
        except BaseException:
            if container_id:
                sandbox._remove(client, container_id)
            shutil.rmtree(mount_dir, ignore_errors=True)
            raise
        return Slot(
            key=key, container_id=container_id, mount_dir=mount_dir, job_dir=job_dir, out_dir=out_dir,
            started=time.monotonic(),
        )  # fmt: skip

    def _remove_slot(self, slot: Slot, client: Any) -> None:
        try:
            sandbox._kill(client, slot.container_id)
            sandbox._remove(client, slot.container_id)
        finally:
            shutil.rmtree(slot.mount_dir, ignore_errors=True)

    # -- life cycle ------------------------------------------------------------------------------

    def ready_count(self, key: PoolKey | None = None) -> int:
        """Pooled containers whose runner has finished its imports."""
        with self._cond:
            slots = list(self._idle.get(key, ())) if key is not None else [s for q in self._idle.values() for s in q]
        return sum(s.ready for s in slots)

    def wait_ready(self, key: PoolKey, count: int = 1, timeout: float = 120.0) -> bool:
        """Until ``count`` containers of ``key`` are pooled and ready (tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._recent.pop(key, None)
            self._recent[key] = None
            self._cond.notify_all()
        while time.monotonic() < deadline:
            if self.ready_count(key) >= count:
                return True
            time.sleep(0.01)
        return False

    def wait_warm(self, timeout: float = 300.0) -> bool:
        """Until the pool has nothing left to start or remove and every pooled container is
        ready: "pool warm" (benchmarks and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                idle = [s for q in self._idle.values() for s in q]
                busy = self._next_key() is not None or bool(self._trash)
            if not busy and all(s.ready for s in idle):
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 60.0) -> None:
        """Remove every pooled container and the pool folder. Safe to call twice."""
        atexit.unregister(self.close)
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self._dir_lock)

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
