"""Every Docker call of the site agent: one hardened, throw-away container per run.

Security decisions (SECURITY.md section 1) live here:

- the run profile is a module constant; vendors and the hub pass no flags, only values
  we validate (format from an enum, numeric limits), and ``container_config`` is a pure
  function so a unit test pins the profile without an engine;
- the image is pinned by id before the run (a tag moved between check and run cannot
  swap the code that runs);
- model and features are bind-mounted read-only, file by file (a labels file next to the
  features is never visible); one fresh output folder is the only writable path that
  survives the container;
- the host enforces the wall-clock timeout (kill, then remove), reads ``State.OOMKilled``
  (a killed child can leave exit code 0), caps the output folder while the run goes on,
  and always removes the container; containers are never reused;
- the seccomp profile is pinned (``seccomp/sandbox.json``), not inherited from the engine:
  moby 20.10.24's default minus kernel surface a Python/numpy/torch/onnx runner never needs
  (see ``SECCOMP_PROFILE``);
- every mounted host path lives in one fresh folder of the job's work dir, named by random
  hex digits, under fixed names (``make_mount_dir``): ``/proc/self/mountinfo`` shows the
  source of every bind mount, and the site's data folder layout must not be one of them.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Final

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig, Mount, Ulimit

from evaluator.runner.errors import EXIT_ARTIFACT, EXIT_CONTRACT

MiB: Final = 1024 * 1024

SANDBOX_UID: Final = 65534  # nobody:nogroup
SANDBOX_USER: Final = f"{SANDBOX_UID}:{SANDBOX_UID}"
SANDBOX_LABEL: Final = "vaultbench.sandbox"

MODEL_FORMATS: Final = frozenset({"torchscript", "sklearn", "onnx", "python_package"})
# What the runner runs: the vendors' formats, plus the numpy-only form the site's own agent makes
# of a scikit-learn model (evaluator/compiled_models.py). Never a format a job may ask for.
RUNNER_FORMATS: Final = MODEL_FORMATS | {"compiled"}
FOLDER_FORMATS: Final = frozenset({"python_package", "compiled"})  # the model is a folder
# Fixed in-container names: nothing vendor-chosen ever reaches the argv or a mount target.
MODEL_TARGETS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "torchscript": "/model/model.pt",
        "sklearn": "/model/model.joblib",
        "onnx": "/model/model.onnx",
        "python_package": "/model",
        "compiled": "/model",
    }
)
FEATURES_TARGET: Final = "/data/features.npy"
OFFSET_TARGET: Final = "/offset/weights_offset.safetensors"
TRAIN_FEATURES_TARGET: Final = "/data/train/features.npy"
TRAIN_LABELS_TARGET: Final = "/data/train/labels.npy"
VAL_FEATURES_TARGET: Final = "/data/validation/features.npy"
REQUESTS_TARGET: Final = "/requests"
TRAINABLE_FORMATS: Final = frozenset({"torchscript", "python_package"})
OUTPUT_TARGET: Final = "/out"
PREDICTIONS_NAME: Final = "predictions.npy"
COMPILED_NAME: Final = "compiled"  # where a scikit-learn run asked to convert leaves the form
RUNNER_ENTRYPOINT: Final = ("python3", "-m", "runner")
MAX_BATCH_SIZE: Final = 1 << 20
MAX_OUTPUT_ENTRIES: Final = 16  # only one file is valid; the rest is there to stop a flood early
LOG_TAIL_BYTES: Final = 64 * 1024

SECCOMP_PROFILE_PATH: Final = Path(__file__).with_name("seccomp") / "sandbox.json"
# The engine takes the profile's contents, not a path. Parsed here so a broken file fails at import.
SECCOMP_PROFILE: Final = json.dumps(
    json.loads(SECCOMP_PROFILE_PATH.read_text(encoding="utf-8")), separators=(",", ":")
)
"""Pinned so that the sandbox does not depend on the engine's default, which on Debian's Docker
20.10 still allows io_uring. The file is moby 20.10.24's default profile (the same allow-list
and argument rules, EPERM for the rest, ``clone3`` answered ENOSYS so glibc falls back to a
``clone`` whose flags are checked) minus:

- ``io_uring_setup``, ``io_uring_enter``, ``io_uring_register`` (a kernel surface with a history
  of escapes), ``memfd_secret``;
- the rule that allowed ``ptrace`` (kernels from 4.8) and the one that allowed ``modify_ldt``
  on x86;
- every capability-gated rule (``bpf``, ``perf_event_open``, the mount family, ``unshare``,
  ``setns``, ``kcmp``, module loading, ...): the sandbox never holds a capability, and a profile
  that does not depend on capabilities cannot be loosened by one;
- the 32-bit ABIs (x86 and x32 on x86_64, arm on aarch64): their syscalls are refused whole.

The default already refused ``userfaultfd``, ``kexec_*``, ``add_key``/``keyctl``/``request_key``,
``process_vm_readv``/``process_vm_writev`` and ``pkey_*``; they stay refused. Only x86_64 and
aarch64 are mapped. ``tests/sandbox`` probes each of these against the real engine, with the
engine's default and an unconfined run as positive controls."""

# The fixed part of the profile. Nothing here depends on the job.
RUN_PROFILE: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "network_mode": "none",
        "read_only": True,
        "user": SANDBOX_USER,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges", f"seccomp={SECCOMP_PROFILE}"],
        "privileged": False,
        "init": True,
        "ipc_mode": "private",
        "shm_size": "256m",
        "environment": {
            "HOME": "/tmp",  # noqa: S108 - the container's private tmpfs
            "TMPDIR": "/tmp",  # noqa: S108
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        },
        "hostname": "sandbox",
        "stdin_open": False,
        "tty": False,
        "auto_remove": False,  # we must inspect State.OOMKilled before removing
        # Bounded logs: a vendor printing forever must not fill the site's disk.
        "log_config": LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
    }
)


class SandboxError(Exception):
    """Base of the sandbox exception tree. ``reason`` is the coarse, fixed failure
    reason that may leave the site; ``logs`` and ``exit_code`` are for the site owner only."""

    reason: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        logs: str = "",
        exit_code: int | None = None,
        container_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.logs = logs
        self.exit_code = exit_code
        self.container_id = container_id


class SandboxTimeout(SandboxError):
    reason = "timeout"


class SandboxOutOfMemory(SandboxError):
    reason = "out_of_memory"


class InvalidOutput(SandboxError):
    reason = "invalid_output"


class SandboxCrashed(SandboxError):
    reason = "crashed"


class SandboxInvalidArtifact(SandboxCrashed):
    """The runner could not read the artifact as a model of its format (exit ``EXIT_ARTIFACT``)."""

    reason = "invalid_artifact"


# The runner's exit codes (evaluator/runner/errors.py) as the contract's reasons; any other
# non-zero exit is "crashed". Vendor code can pick its exit code: a hint for people only.
RUNNER_EXIT_FAILURES: Final[Mapping[int, type[SandboxError]]] = MappingProxyType(
    {EXIT_ARTIFACT: SandboxInvalidArtifact, EXIT_CONTRACT: InvalidOutput}
)


class SandboxUnavailable(SandboxError):
    """The engine is unreachable, the image is missing, or the engine refused the run."""

    reason = "internal_error"


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpus: float
    timeout_seconds: float
    max_output_mb: int
    pids: int = 256
    scratch_mb: int = 256

    def __post_init__(self) -> None:
        # A compromised hub sends these values: refuse anything that loosens the sandbox.
        checks = {
            "memory_mb": 16 <= self.memory_mb <= 1024 * 1024,
            "cpus": 0.01 <= self.cpus <= 1024,
            "timeout_seconds": 0 < self.timeout_seconds <= 7 * 24 * 3600,
            "max_output_mb": 1 <= self.max_output_mb <= 64 * 1024,
            "pids": 8 <= self.pids <= 4096,
            "scratch_mb": 1 <= self.scratch_mb <= 64 * 1024,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"resource limits out of range: {', '.join(bad)}")


@dataclass(frozen=True)
class SandboxRun:
    predictions_path: Path
    exit_code: int
    logs: str = field(repr=False)  # truncated; for the site owner only, never the vendor
    duration_seconds: float
    container_id: str = ""  # already removed; kept for the site's own records


@dataclass(frozen=True)
class PreparedRun:
    """A container configuration plus the host folder it may write to."""

    config: Mapping[str, Any]
    out_dir: Path
    predictions_path: Path


def container_config(
    *,
    image_id: str,
    model_path: Path,
    model_format: str,
    features_path: Path,
    out_dir: Path,
    limits: Limits,
    batch_size: int = 4096,
    name: str | None = None,
    weights_offset_path: Path | None = None,
    compile_model: bool = False,
) -> dict[str, Any]:
    """The ``containers.create`` kwargs for one prediction run (pure: no Docker calls).

    ``weights_offset_path``: a fine-tuned submission's offset ``D`` (safetensors), mounted
    read-only; the runner adds it to the parent's parameters by name. ``compile_model``: a
    scikit-learn run also leaves its numpy-only form in ``/out/compiled`` when it has one."""
    if model_format not in RUNNER_FORMATS:
        raise ValueError(f"unknown model format {model_format!r}")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError("batch_size out of range")
    model_target = MODEL_TARGETS[model_format]
    max_output_bytes = limits.max_output_mb * MiB
    # RLIMIT_FSIZE caps every single file (docker passes raw setrlimit values: bytes).
    fsize = max(max_output_bytes, limits.scratch_mb * MiB)
    threads = str(max(1, int(limits.cpus + 0.999)))
    config: dict[str, Any] = dict(RUN_PROFILE)
    config["environment"] = {
        **RUN_PROFILE["environment"],
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
    }
    config.update(
        image=image_id,
        entrypoint=list(RUNNER_ENTRYPOINT),
        command=[
            "predict",
            "--format",
            model_format,
            "--model",
            model_target,
            "--features",
            FEATURES_TARGET,
            "--output",
            f"{OUTPUT_TARGET}/{PREDICTIONS_NAME}",
            "--batch-size",
            str(batch_size),
            *(["--weights-offset", OFFSET_TARGET] if weights_offset_path is not None else []),
            *(["--compile-to", f"{OUTPUT_TARGET}/{COMPILED_NAME}"] if compile_model else []),
        ],
        name=name or f"vb-sandbox-{uuid.uuid4().hex[:16]}",
        labels={SANDBOX_LABEL: "1"},
        mounts=[
            Mount(target=model_target, source=str(model_path), type="bind", read_only=True),
            Mount(target=FEATURES_TARGET, source=str(features_path), type="bind", read_only=True),
            *(
                [Mount(target=OFFSET_TARGET, source=str(weights_offset_path), type="bind", read_only=True)]
                if weights_offset_path is not None
                else []
            ),
            Mount(target=OUTPUT_TARGET, source=str(out_dir), type="bind", read_only=False),
        ],
        tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={limits.scratch_mb}m,mode=1777"},  # noqa: S108
        mem_limit=f"{limits.memory_mb}m",
        memswap_limit=f"{limits.memory_mb}m",  # equal: no swap on top of the memory cap
        nano_cpus=int(limits.cpus * 1e9),
        pids_limit=limits.pids,
        ulimits=[
            Ulimit(name="nofile", soft=1024, hard=1024),
            Ulimit(name="core", soft=0, hard=0),
            Ulimit(name="fsize", soft=fsize, hard=fsize),
        ],
    )
    return config


def _check_readable_by_sandbox(path: Path) -> None:
    """The sandbox user must read the inputs; the site keeps them private by placing
    them in a 0700 work dir (bind mounts do not need the parents to be traversable)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise SandboxUnavailable(f"refusing to mount a symlink: {path}")
    if not st.st_mode & stat.S_IROTH:
        raise SandboxUnavailable(f"{path} is not readable by the sandbox user")
    if stat.S_ISDIR(st.st_mode):
        if not st.st_mode & stat.S_IXOTH:
            raise SandboxUnavailable(f"{path} is not traversable by the sandbox user")
        for child in path.iterdir():
            _check_readable_by_sandbox(child)


def make_mount_dir(work_dir: Path) -> Path:
    """A fresh, private folder of ``work_dir`` that holds every host path one sandbox mounts.

    The source of each bind mount shows in the sandbox's ``/proc/self/mountinfo``; staging the
    inputs here, under fixed names, keeps the site's data folder (its location, the task
    folders) out of it. Its name is 32 random hex digits and says nothing about the job; the
    work folder's own path still shows, so a site keeps ``work_dir`` at a path that says
    nothing either (the example ``/var/lib/vaultbench/work``)."""
    mount_dir = work_dir / uuid.uuid4().hex
    mount_dir.mkdir(mode=0o700)  # bind mounts do not need the parents to be traversable
    return mount_dir


def _link_or_copy(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    try:
        os.link(src, dest, follow_symlinks=False)  # the same inode: no copy, whatever its size
    except OSError as exc:
        # another filesystem, or a file the agent does not own (fs.protected_hardlinks)
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(src, dest, follow_symlinks=False)


def stage_input(src: Path, dest: Path) -> Path:
    """``src`` under the name ``dest`` (inside a mount folder): a hard link, or a copy where a
    link cannot be made; a folder (a ``python_package`` model) is rebuilt with its files
    linked. Modes are kept, so an input the sandbox user cannot read stays unreadable."""
    if stat.S_ISDIR(src.lstat().st_mode):
        shutil.copytree(src, dest, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(src, dest)
    return dest


def make_output_dir(work_dir: Path) -> Path:
    """A fresh, empty folder that only the sandbox user (and root) can write."""
    out_dir = work_dir / f"out-{uuid.uuid4().hex}"
    out_dir.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(out_dir, SANDBOX_UID, SANDBOX_UID)
    else:  # an unprivileged agent cannot chown; the 0700 work_dir keeps others out
        out_dir.chmod(0o777)
    return out_dir


def resolve_image(client: docker.DockerClient, image: str) -> str:
    """The image id (``sha256:...``) for a tag, never pulling."""
    try:
        return str(client.images.get(image).id)
    except docker.errors.ImageNotFound as exc:
        raise SandboxUnavailable(f"sandbox image {image!r} is not present") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise SandboxUnavailable(f"docker engine error: {exc}") from exc


def get_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise SandboxUnavailable(f"docker engine unreachable: {exc}") from exc
    return client


def prepare_prediction(
    *,
    image_id: str,
    model_path: Path,
    model_format: str,
    features_path: Path,
    work_dir: Path,
    limits: Limits,
    batch_size: int = 4096,
    weights_offset_path: Path | None = None,
    compile_model: bool = False,
) -> PreparedRun:
    check_model_path(model_format, model_path)
    _check_readable_by_sandbox(model_path)
    _check_readable_by_sandbox(features_path)
    if weights_offset_path is not None:
        if model_format not in TRAINABLE_FORMATS:
            raise SandboxUnavailable(f"a weights offset cannot apply to {model_format}")
        _check_readable_by_sandbox(weights_offset_path)
    mount_dir = make_mount_dir(work_dir).resolve()
    model_name = PurePosixPath(MODEL_TARGETS[model_format]).name
    if weights_offset_path is not None:
        weights_offset_path = stage_input(weights_offset_path, mount_dir / PurePosixPath(OFFSET_TARGET).name)
    out_dir = make_output_dir(mount_dir)
    config = container_config(
        image_id=image_id,
        model_path=stage_input(model_path, mount_dir / model_name),
        model_format=model_format,
        features_path=stage_input(features_path, mount_dir / PurePosixPath(FEATURES_TARGET).name),
        out_dir=out_dir,
        limits=limits,
        batch_size=batch_size,
        weights_offset_path=weights_offset_path,
        compile_model=compile_model,
    )
    return PreparedRun(config=config, out_dir=out_dir, predictions_path=out_dir / PREDICTIONS_NAME)


def check_model_path(model_format: str, model_path: Path) -> None:
    if model_format in FOLDER_FORMATS and not model_path.is_dir():
        raise SandboxUnavailable(f"a {model_format} model must be a prepared folder")
    if model_format not in FOLDER_FORMATS and not model_path.is_file():
        raise SandboxUnavailable("the model must be a regular file")


def output_usage(out_dir: Path) -> tuple[int, int]:
    """(bytes, entries) under ``out_dir``, never following links. Walks at most
    ``MAX_OUTPUT_ENTRIES + 1`` entries: past that the run is invalid anyway."""
    total = entries = 0
    stack = [out_dir]
    while stack and entries <= MAX_OUTPUT_ENTRIES:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    if entries > MAX_OUTPUT_ENTRIES:
                        break
                    st = entry.stat(follow_symlinks=False)
                    # Apparent size (what a reader would get) or disk use, whichever is larger.
                    total += max(st.st_size, st.st_blocks * 512)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(Path(entry.path))
        except OSError:
            continue
    return total, entries


def remove_containers_under(path: Path, *, client: docker.DockerClient | None = None) -> int:
    """Removes sandbox containers that mount anything under `path` (a dead agent's job folder).

    Only containers carrying the sandbox label are considered, so nothing else on the engine is
    ever touched."""
    client = client or get_client()
    prefix = str(Path(path).resolve())
    removed = 0
    # sparse: the engine's list data (Mounts included), no per-container inspect that a container
    # removed meanwhile (another agent's job ending) would fail with NotFound.
    for container in client.containers.list(all=True, filters={"label": SANDBOX_LABEL}, sparse=True):
        sources = [mount.get("Source", "") for mount in container.attrs.get("Mounts", [])]
        if any(source == prefix or source.startswith(prefix + os.sep) for source in sources):
            _remove(client, container.id)
            removed += 1
    return removed


def _remove(client: docker.DockerClient, container_id: str) -> None:
    for _ in range(20):
        try:
            client.api.remove_container(container_id, force=True, v=True)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # removal already in progress
                time.sleep(0.25)
                continue
            raise SandboxUnavailable(f"cannot remove container: {exc}") from exc
    raise SandboxUnavailable("container removal did not finish")


def _logs(client: docker.DockerClient, container_id: str) -> str:
    try:
        raw = client.api.logs(container_id, stdout=True, stderr=True, tail=500)
    except docker.errors.DockerException:
        return ""
    return raw[-LOG_TAIL_BYTES:].decode("utf-8", errors="replace")


def watch(
    client: docker.DockerClient,
    container_id: str,
    out_dir: Path,
    *,
    deadline: float,
    max_bytes: int,
    poll_seconds: float = 0.2,
) -> tuple[dict[str, Any], SandboxError | None]:
    """Until the container exits, ``deadline`` (``time.monotonic``) passes or ``out_dir`` grows
    past its cap; returns the final ``State`` and the failure, if any (the container is then
    killed). The exit is noticed at once (``docker wait``); the cap and the deadline are checked
    every ``poll_seconds``."""
    failure: SandboxError | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            client.api.wait(container_id, timeout=max(0.01, min(poll_seconds, remaining)))
            break
        except requests.exceptions.RequestException:
            pass  # still running after poll_seconds (a read timeout), or the engine is away
        if not client.api.inspect_container(container_id)["State"]["Running"]:
            break
        size, entries = output_usage(out_dir)
        if size > max_bytes or entries > MAX_OUTPUT_ENTRIES:
            failure = InvalidOutput("the output folder grew past its cap")
        elif time.monotonic() >= deadline:
            failure = SandboxTimeout("no exit within the time limit")
        if failure is not None:
            _kill(client, container_id)
            break
    return client.api.inspect_container(container_id)["State"], failure


def finish(
    client: docker.DockerClient,
    container_id: str,
    *,
    state: Mapping[str, Any],
    failure: SandboxError | None,
    out_dir: Path,
    max_bytes: int,
    duration: float,
) -> SandboxRun:
    """The run's result from its final state, or the exception that says why it failed."""
    logs = _logs(client, container_id)
    exit_code = int(state.get("ExitCode", -1))
    if failure is not None:
        failure.logs, failure.exit_code, failure.container_id = logs, exit_code, container_id
        raise failure
    if state.get("OOMKilled"):
        raise SandboxOutOfMemory(
            "the memory limit was hit", logs=logs, exit_code=exit_code, container_id=container_id
        )
    if exit_code != 0:
        raise RUNNER_EXIT_FAILURES.get(exit_code, SandboxCrashed)(
            f"the runner exited with {exit_code}", logs=logs, exit_code=exit_code, container_id=container_id
        )
    size, entries = output_usage(out_dir)
    if size > max_bytes or entries > MAX_OUTPUT_ENTRIES:
        raise InvalidOutput(
            "the output folder is past its cap", logs=logs, exit_code=exit_code, container_id=container_id
        )
    return SandboxRun(
        predictions_path=out_dir / PREDICTIONS_NAME,
        exit_code=exit_code,
        logs=logs,
        duration_seconds=duration,
        container_id=container_id,
    )


def execute(
    prepared: PreparedRun,
    *,
    limits: Limits,
    client: docker.DockerClient | None = None,
    poll_seconds: float = 0.2,
) -> SandboxRun:
    """Create, start and watch one container; always remove it.

    Raises ``SandboxTimeout`` past ``limits.timeout_seconds`` (container killed),
    ``InvalidOutput`` when the output folder grows past its cap (container killed),
    ``SandboxOutOfMemory`` when the engine reports ``OOMKilled`` (whatever the exit
    code), ``SandboxCrashed`` on a non-zero exit, ``SandboxUnavailable`` on engine errors.
    """
    client = client or get_client()
    try:
        container_id = str(client.containers.create(**prepared.config).id)
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise SandboxUnavailable(f"cannot create the sandbox: {exc}") from exc

    started = time.monotonic()
    stopped = False
    try:
        try:
            client.api.start(container_id)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise SandboxUnavailable(f"cannot start the sandbox: {exc}") from exc
        run = watch_and_finish(
            client, container_id, prepared.out_dir, limits=limits, started=started, poll_seconds=poll_seconds
        )
        stopped = True
        return run
    except SandboxError:
        stopped = True  # finish's verdict on a stopped container, or one that never started
        raise
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise SandboxUnavailable(f"docker engine error: {exc}") from exc
    finally:
        if not stopped:
            _kill(client, container_id)
        _remove(client, container_id)


def watch_and_finish(
    client: docker.DockerClient,
    container_id: str,
    out_dir: Path,
    *,
    limits: Limits,
    started: float,
    poll_seconds: float = 0.2,
) -> SandboxRun:
    """Watch a started container (cold or pooled) until it stops, then its result or failure
    (``finish``). A container still running after the watch is killed first."""
    max_bytes = limits.max_output_mb * MiB
    state, failure = watch(
        client, container_id, out_dir, deadline=started + limits.timeout_seconds, max_bytes=max_bytes,
        poll_seconds=poll_seconds,
    )  # fmt: skip
    if state.get("Running"):
        _kill(client, container_id)
    return finish(
        client, container_id, state=state, failure=failure, out_dir=out_dir, max_bytes=max_bytes,
        duration=time.monotonic() - started,
    )  # fmt: skip


def _kill(client: docker.DockerClient, container_id: str) -> None:
    try:
        client.api.kill(container_id)
    except docker.errors.APIError:
        pass  # already stopped (409) or gone (404)
    try:
        client.api.wait(container_id, timeout=30)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        pass


def run_prediction(*, image: str, limits: Limits, client: docker.DockerClient | None = None, **job: Any) -> SandboxRun:
    """Run the runner image on one prepared model and one features file.

    ``job``: ``prepare_prediction``'s other keywords (``model_path``, ``model_format``,
    ``features_path``, ``work_dir``, ``batch_size``, ``weights_offset_path``). ``model_path``
    is a file for single-file formats and a folder for ``python_package`` (see
    ``evaluator.artifacts.prepare_model``). The predictions are NOT validated here: read them
    with ``evaluator.outputs.load_predictions``.
    """
    client = client or get_client()
    prepared = prepare_prediction(image_id=resolve_image(client, image), limits=limits, **job)
    return execute(prepared, limits=limits, client=client)


__all__ = [
    "RUN_PROFILE",
    "InvalidOutput",
    "Limits",
    "PreparedRun",
    "SandboxCrashed",
    "SandboxError",
    "SandboxInvalidArtifact",
    "SandboxOutOfMemory",
    "SandboxRun",
    "SandboxTimeout",
    "SandboxUnavailable",
    "container_config",
    "execute",
    "prepare_prediction",
    "run_prediction",
]
