"""The training sandbox: one long-lived, hardened container per (federated run, site).

The same profile as a prediction run (``evaluator.sandbox.container_config``); the host
writes round requests into a read-only folder and reads the round's outputs defensively.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

from evaluator.sandbox import (
    MAX_OUTPUT_ENTRIES,
    MODEL_TARGETS,
    OUTPUT_TARGET,
    REQUESTS_TARGET,
    TRAIN_FEATURES_TARGET,
    TRAIN_LABELS_TARGET,
    TRAINABLE_FORMATS,
    VAL_FEATURES_TARGET,
    InvalidOutput,
    Limits,
    MiB,
    SandboxCrashed,
    SandboxError,
    SandboxOutOfMemory,
    SandboxTimeout,
    SandboxUnavailable,
    _check_readable_by_sandbox,
    _kill,
    _logs,
    _remove,
    container_config,
    get_client,
    make_mount_dir,
    make_output_dir,
    output_usage,
    resolve_image,
    stage_input,
)


def training_container_config(
    *,
    image_id: str,
    model_path: Path,
    model_format: str,
    train_features_path: Path,
    train_labels_path: Path,
    val_features_path: Path,
    requests_dir: Path,
    out_dir: Path,
    limits: Limits,
    name: str | None = None,
) -> dict[str, Any]:
    """The ``containers.create`` kwargs of a training sandbox (pure: no Docker calls).

    The same hardened profile as a prediction run. Mounted read-only: the model, the features
    and labels of the TRAINING rows, the features (never the labels) of the validation rows,
    and the requests folder the host writes round requests into. ``/out`` is the one writable
    path. The test split is never mounted.
    """
    if model_format not in TRAINABLE_FORMATS:
        raise ValueError(f"format {model_format!r} cannot be fine-tuned")
    base = container_config(
        image_id=image_id,
        model_path=model_path,
        model_format=model_format,
        features_path=train_features_path,
        out_dir=out_dir,
        limits=limits,
        name=name,
    )
    model_target = MODEL_TARGETS[model_format]
    base.update(
        command=[
            "train",
            "--format",
            model_format,
            "--model",
            model_target,
            "--train-features",
            TRAIN_FEATURES_TARGET,
            "--train-labels",
            TRAIN_LABELS_TARGET,
            "--val-features",
            VAL_FEATURES_TARGET,
            "--requests",
            REQUESTS_TARGET,
            "--output",
            OUTPUT_TARGET,
        ],
        mounts=[
            Mount(target=model_target, source=str(model_path), type="bind", read_only=True),
            Mount(target=TRAIN_FEATURES_TARGET, source=str(train_features_path), type="bind", read_only=True),
            Mount(target=TRAIN_LABELS_TARGET, source=str(train_labels_path), type="bind", read_only=True),
            Mount(target=VAL_FEATURES_TARGET, source=str(val_features_path), type="bind", read_only=True),
            Mount(target=REQUESTS_TARGET, source=str(requests_dir), type="bind", read_only=True),
            Mount(target=OUTPUT_TARGET, source=str(out_dir), type="bind", read_only=False),
        ],
    )
    return base


@dataclass(frozen=True)
class TrainingRound:
    """What one round of a training sandbox produced (checked: names, shapes, finite)."""

    weights: dict[str, Any] = field(repr=False)  # name -> float32 ndarray, the new weights
    val_predictions: Any = field(repr=False)  # float64 ndarray, NOT yet schema-checked
    train_predictions: Any = field(repr=False)  # new weights on the training rows, NOT checked
    train_loss: float | None  # the sandbox's own claim: for the site's logs only, never released
    n_examples: int
    duration_seconds: float


BEGIN_NAME = "begin"  # evaluator/runner/train.py: the inputs are in place, start
READY_NAME = ".ready"  # a pre-started runner's "runtime imported" (evaluator/training_pool.py)
# Waiting for a round's output: the file is checked every 1 ms growing to 5 ms (a round of a
# small model takes ~20 ms), the container's state and the output folder's size every 0.1 s
# (an engine call and a directory scan: not at the file's pace).
FILE_POLL_SECONDS = (0.001, 0.005)
ENGINE_CHECK_SECONDS = 0.1


def _write_request_file(folder: Path, name: str, data: bytes) -> None:
    tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)  # the sandbox user reads it whatever the umask
    os.replace(tmp, folder / name)


def _parse_safetensors(data: bytes) -> dict[str, Any]:
    import numpy as np
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except Exception as exc:  # the parser raises several types on malformed input
        raise InvalidOutput(f"the sandbox wrote malformed safetensors ({type(exc).__name__})") from None
    out = {}
    for name, value in tensors.items():
        if value.dtype != np.float32:
            raise InvalidOutput(f"tensor {name!r} is {value.dtype}, not float32")
        if not np.all(np.isfinite(value)):
            raise InvalidOutput(f"tensor {name!r} has non-finite values")
        out[name] = np.array(value, dtype=np.float32)
    return out


class TrainingSession:
    """One kept-alive training sandbox for one run at one site (``runner train``).

    ``start()`` creates and starts the container and waits for the parent's weights ``w0``
    and layout; ``run_round(offset, config)`` writes a request (and ``D``) into the read-only
    requests folder and waits, at most ``limits.timeout_seconds``, for the round's outputs,
    which are read defensively and then deleted; ``close()`` kills and removes the container.
    Any error kills and removes it too: a session is never reused after an error.
    """

    def __init__(
        self,
        *,
        image: str,
        model_path: Path,
        model_format: str,
        train_features_path: Path,
        train_labels_path: Path,
        val_features_path: Path,
        work_dir: Path,
        limits: Limits,
        client: docker.DockerClient | None = None,
        poll_seconds: float = ENGINE_CHECK_SECONDS,
        pool: Any = None,  # evaluator.training_pool.TrainingPool: a pre-started container if one is ready
    ) -> None:
        if model_format not in TRAINABLE_FORMATS:
            raise SandboxUnavailable(f"format {model_format!r} cannot be fine-tuned")
        self.image = image
        self.model_path = model_path
        self.model_format = model_format
        self.inputs = (train_features_path, train_labels_path, val_features_path)
        self.work_dir = work_dir
        self.limits = limits
        self.poll_seconds = poll_seconds
        self._client = client
        self.pool = pool
        self.pool_key: Any = None  # the pool's key of this session (set when a pool is given)
        self.warm = False  # whether the container was pre-started
        self.container_id: str | None = None
        self.w0: dict[str, Any] = {}
        self._seq = 0
        self._closed = False
        self.mount_dir: Path | None = None  # every mounted host path: see make_mount_dir
        self.requests_dir: Path | None = None
        self.out_dir: Path | None = None

    @property
    def max_bytes(self) -> int:
        return self.limits.max_output_mb * MiB

    def __enter__(self) -> TrainingSession:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> dict[str, Any]:
        """Start the sandbox; returns ``w0`` (the parent's trainable parameters)."""
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> dict[str, Any]:
        client = self._client = self._client or get_client()
        for path in (self.model_path, *self.inputs):
            _check_readable_by_sandbox(path)
        image_id = resolve_image(client, self.image)
        if not (self.pool is not None and self._start_pooled(client, image_id)):
            self._start_cold(client, image_id)
        self._wait_for("layout.json")
        self.w0 = _parse_safetensors(self._read_and_remove("w0.safetensors"))
        self._read_and_remove("layout.json")  # the ready marker; the layout comes from w0 itself
        assert self.out_dir is not None
        (self.out_dir / READY_NAME).unlink(missing_ok=True)  # a pre-started runner's; never read
        if not self.w0:
            raise InvalidOutput("the model has no trainable parameters")
        return self.w0

    def _start_cold(self, client: docker.DockerClient, image_id: str) -> None:
        mount_dir = self.mount_dir = make_mount_dir(self.work_dir).resolve()
        staged = [
            stage_input(path, mount_dir / name)
            for path, name in zip(
                self.inputs, ("train-features.npy", "train-labels.npy", "val-features.npy"), strict=True
            )
        ]
        self.requests_dir = mount_dir / "requests"
        self.requests_dir.mkdir(mode=0o755)
        self.requests_dir.chmod(0o755)  # noqa: S103 - the sandbox user reads requests
        _write_request_file(self.requests_dir, BEGIN_NAME, b"")  # the inputs are in place already
        self.out_dir = make_output_dir(mount_dir)
        config = training_container_config(
            image_id=image_id,
            model_path=stage_input(
                self.model_path, mount_dir / PurePosixPath(MODEL_TARGETS[self.model_format]).name
            ),
            model_format=self.model_format,
            train_features_path=staged[0],
            train_labels_path=staged[1],
            val_features_path=staged[2],
            requests_dir=self.requests_dir,
            out_dir=self.out_dir,
            limits=self.limits,
        )
        try:
            self.container_id = str(client.containers.create(**config).id)
            client.api.start(self.container_id)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise SandboxUnavailable(f"cannot start the training sandbox: {exc}") from exc

    def _start_pooled(self, client: docker.DockerClient, image_id: str) -> bool:
        """Take a pre-started container of this session's kind, place the run's inputs in its
        job folder and let it begin. False (the caller starts one cold) when none is pooled or
        the one taken ended before its run: it never saw a model or a row then."""
        from evaluator.sandbox_pool import PoolKey
        from evaluator.training_pool import INPUT_NAMES, MODEL_NAMES, REQUESTS_NAME

        self.pool_key = PoolKey(image_id, self.model_format, self.limits, self.pool.runtime)
        slot = self.pool.take(self.pool_key)
        if slot is None:
            return False
        try:
            running = client.api.inspect_container(slot.container_id)["State"]["Running"]
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            running = False
        if not running:
            self.pool.discard(slot)
            return False
        # From here the container is this session's: close() kills and removes it.
        self.container_id, self.mount_dir, self.out_dir = slot.container_id, slot.mount_dir, slot.out_dir
        self.requests_dir = slot.job_dir / REQUESTS_NAME
        stage_input(self.model_path, slot.job_dir / MODEL_NAMES[self.model_format])
        for path, name in zip(self.inputs, INPUT_NAMES.values(), strict=True):
            stage_input(path, slot.job_dir / name)
        _write_request_file(self.requests_dir, BEGIN_NAME, b"")
        self.warm = True
        return True

    def run_round(self, offset: Mapping[str, Any], config: Mapping[str, Any]) -> TrainingRound:
        """Train one round from ``w0 + offset``; ``config``: local_epochs, batch_size,
        learning_rate, proximal_mu, seed."""
        try:
            return self._run_round(offset, config)
        except BaseException:
            self.close()
            raise

    def _run_round(self, offset: Mapping[str, Any], config: Mapping[str, Any]) -> TrainingRound:

        import numpy as np
        from safetensors.numpy import save

        if self.container_id is None or self._closed:
            raise SandboxUnavailable("the training sandbox is not running")
        if set(offset) != set(self.w0) or any(np.shape(offset[n]) != self.w0[n].shape for n in offset):
            raise ValueError("the offset does not match the model's layout")
        assert self.requests_dir is not None
        seq = self._seq
        started = time.monotonic()
        offset_name = f"offset-{seq}.safetensors"
        tensors = {n: np.ascontiguousarray(offset[n], dtype=np.float32) for n in sorted(offset)}
        _write_request_file(self.requests_dir, offset_name, save(tensors))
        request = {
            "seq": seq,
            "offset": offset_name,
            "local_epochs": int(config["local_epochs"]),
            "batch_size": int(config["batch_size"]),
            "learning_rate": float(config["learning_rate"]),
            "proximal_mu": float(config.get("proximal_mu") or 0.0),
            "seed": int(config.get("seed", 0)),
            "dp": dict(config["dp"]) if config.get("dp") else None,  # record-level DP-SGD (runner.dpsgd)
        }
        _write_request_file(self.requests_dir, f"request-{seq}.json", json.dumps(request).encode())
        self._wait_for(f"result-{seq}.json")
        try:
            result = json.loads(self._read_and_remove(f"result-{seq}.json"))
        except ValueError:
            raise InvalidOutput("the round result is not JSON") from None
        if not isinstance(result, dict):
            raise InvalidOutput("the round result is not an object")
        from evaluator.outputs import parse_npy

        val_predictions = parse_npy(self._read_and_remove(f"val-{seq}.npy"))
        train_predictions = parse_npy(self._read_and_remove(f"train-{seq}.npy"))
        weights = _parse_safetensors(self._read_and_remove(f"weights-{seq}.safetensors"))
        if set(weights) != set(self.w0) or any(weights[n].shape != self.w0[n].shape for n in weights):
            raise InvalidOutput("the new weights do not match the model's layout")
        loss = result.get("train_loss")
        if isinstance(loss, bool) or not isinstance(loss, int | float) or not np.isfinite(loss):
            loss = None
        n_examples = result.get("n_examples")
        if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 0:
            raise InvalidOutput("the round result has no example count")
        for stale in (offset_name, f"request-{seq}.json"):
            (self.requests_dir / stale).unlink(missing_ok=True)
        self._seq += 1
        return TrainingRound(
            weights=weights,
            val_predictions=val_predictions,
            train_predictions=train_predictions,
            train_loss=float(loss) if loss is not None else None,
            n_examples=n_examples,
            duration_seconds=time.monotonic() - started,
        )

    def _wait_for(self, name: str) -> None:
        """Until ``out/name`` exists; raise if the sandbox died, flooded /out or ran late."""
        assert self._client is not None and self.container_id is not None and self.out_dir is not None
        deadline = time.monotonic() + self.limits.timeout_seconds
        target = self.out_dir / name
        pause, longest = FILE_POLL_SECONDS
        next_check = time.monotonic() + self.poll_seconds
        while True:
            if os.path.lexists(target):
                return
            now = time.monotonic()
            if now >= next_check:
                next_check = now + self.poll_seconds
                self._check_alive(target)
                if now >= deadline:
                    raise SandboxTimeout(f"no {name} after {self.limits.timeout_seconds} s")
            time.sleep(pause)
            pause = min(longest, pause * 1.5)

    def _check_alive(self, target: Path) -> None:
        """Raise if the container has ended (without ``target``) or flooded its output folder."""
        assert self._client is not None and self.container_id is not None and self.out_dir is not None
        try:
            state = self._client.api.inspect_container(self.container_id)["State"]
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise SandboxUnavailable(f"docker engine error: {exc}") from exc
        if not state["Running"]:
            if os.path.lexists(target):
                return
            logs = _logs(self._client, self.container_id)
            code = int(state.get("ExitCode", -1))
            if state.get("OOMKilled"):
                raise SandboxOutOfMemory("the memory limit was hit", logs=logs, exit_code=code)
            raise SandboxCrashed(f"the training runner exited with {code}", logs=logs, exit_code=code)
        size, entries = output_usage(self.out_dir)
        if size > self.max_bytes or entries > MAX_OUTPUT_ENTRIES:
            raise InvalidOutput("the output folder grew past its cap")

    def _read_and_remove(self, name: str) -> bytes:
        from evaluator.outputs import _read_capped

        assert self.out_dir is not None
        path = self.out_dir / name
        try:
            return _read_capped(path, self.max_bytes)
        finally:
            try:
                path.unlink()
            except OSError:
                pass

    def close(self) -> None:
        """Kill and remove the container; remove the requests folder. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.container_id is not None and self._client is not None:
            try:
                _kill(self._client, self.container_id)
                _remove(self._client, self.container_id)
            except SandboxError:
                pass
        if self.mount_dir is not None:  # the requests, the outputs and the staged inputs
            shutil.rmtree(self.mount_dir, ignore_errors=True)
        if self.pool is not None and self.pool_key is not None:
            self.pool.want(self.pool_key)  # the next run of this kind starts warm


__all__ = ["TrainingRound", "TrainingSession", "training_container_config"]
