"""Warm training sandboxes: a training container started ahead, used for exactly one run.

A federated run's first round waits for every site's training sandbox: creating and starting
the container and importing torch in it take seconds, paid after the owner approved. The
training pool pays them before: per (runner image, model format, resource limits) it keeps up
to ``size`` containers started with the training profile (``pooled_training_config``) and the
runner's ``train`` command on paths inside a per-container job folder; the runner imports the
format's runtime, writes ``/out/.ready`` and waits for ``begin`` in the requests folder
(``evaluator/runner/train.py``). A run takes one container (``TrainingSession(pool=...)``),
places its model and its rows in the job folder, writes ``begin``, and from then on the session
is exactly a cold one: the same rounds, the same watching, killed and removed at its end.

The eval pool's machinery (``evaluator.sandbox_pool.WarmPool``: refill thread, memory bound,
retirement, orphan sweep through the locked pool folder) is reused; only what a container is
started with differs, and when it is replaced: a taken container's replacement is started when
the run ends (``want``), not during it, where it would compete with the rounds for the CPU.

Security decisions (the training sandbox's, unchanged):

- the profile is the cold session's: ``pooled_training_config`` starts from
  ``training_sandbox.training_container_config`` and changes only the command's paths, the mounts
  and the labels (tests pin the rest equal and probe a pooled container as a cold one);
- one container per run, never reused: taken once, removed by the session that took it;
- the job folder is mounted read-only at ``/job`` and holds the model, the training rows'
  features and labels, the validation rows' features (never their labels, never the test split)
  and the requests folder; ``/out`` is the one writable path;
- ``.ready`` is the runner's word only before ``begin``: no vendor code has run in the container
  then; a container found dead before its run is discarded and the run starts cold.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Final

from docker.types import Mount

from evaluator.sandbox import OUTPUT_TARGET, SANDBOX_LABEL
from evaluator.sandbox_pool import JOB_TARGET, POOL_LABEL, RETIRE_SECONDS, PoolKey, Slot, WarmPool

REQUESTS_NAME: Final = "requests"
#: Where a run's inputs go in the job folder (the runner's command names these paths).
INPUT_NAMES: Final = {
    "train_features": "train-features.npy",
    "train_labels": "train-labels.npy",
    "val_features": "val-features.npy",
}
MODEL_NAMES: Final = {"torchscript": "model.pt", "python_package": "model"}


def pooled_training_config(*, key: PoolKey, job_dir: Path, out_dir: Path, name: str | None = None) -> dict[str, Any]:
    """The ``containers.create`` kwargs of a pre-started training sandbox (pure: no Docker
    calls): the cold session's config for the same limits, with the job folder mounted
    read-only at ``/job`` and the runner's paths inside it."""
    from evaluator.training_sandbox import training_container_config

    if key.model_format not in MODEL_NAMES:
        raise ValueError(f"format {key.model_format!r} cannot be fine-tuned")
    config = training_container_config(
        image_id=key.image_id,
        model_path=job_dir / MODEL_NAMES[key.model_format],
        model_format=key.model_format,
        train_features_path=job_dir / INPUT_NAMES["train_features"],
        train_labels_path=job_dir / INPUT_NAMES["train_labels"],
        val_features_path=job_dir / INPUT_NAMES["val_features"],
        requests_dir=job_dir / REQUESTS_NAME,
        out_dir=out_dir,
        limits=key.limits,
        name=name or f"vb-trainpool-{uuid.uuid4().hex[:16]}",
    )
    # The cold command's targets, moved into /job (the same flags, in the same order).
    inside = {m["Target"]: f"{JOB_TARGET}/{Path(m['Source']).name}" for m in config["mounts"]}
    inside[OUTPUT_TARGET] = OUTPUT_TARGET
    config.update(
        command=[inside.get(arg, arg) for arg in config["command"]],
        labels={SANDBOX_LABEL: "1", POOL_LABEL: "1"},
        mounts=[
            Mount(target=JOB_TARGET, source=str(job_dir), type="bind", read_only=True),
            Mount(target=OUTPUT_TARGET, source=str(out_dir), type="bind", read_only=False),
        ],
    )
    if key.runtime != "runc":
        config["runtime"] = key.runtime
    return config


class TrainingPool(WarmPool):
    """Pre-started training sandboxes. ``take`` hands one to a ``TrainingSession``; ``want``
    asks for one of a key (after a run, or when a run of that kind is likely)."""

    def take(self, key: PoolKey) -> Slot | None:
        """An idle container of ``key`` (removed from the pool: the caller owns it), or None.
        Its replacement is not started now: the run would compete with it for the CPU."""
        with self._cond:
            idle = self._idle.get(key)
            slot = None
            while idle and slot is None:
                slot = idle.popleft()
                if time.monotonic() - slot.started > RETIRE_SECONDS:  # near its runner's idle exit
                    self._trash.append(slot)
                    slot = None
            self._recent.pop(key, None)  # no refill until ``want``
            self._cond.notify_all()
            return slot

    def want(self, key: PoolKey) -> None:
        """Keep a container of ``key`` ready (started in the background)."""
        with self._cond:
            if self._closed:
                return
            self._recent.pop(key, None)
            self._recent[key] = None
            self._cond.notify_all()

    def discard(self, slot: Slot) -> None:
        """A taken container that will not run (it died before its run): removed in the background."""
        self._discard(slot)

    def _container_config(self, *, key: PoolKey, job_dir: Path, out_dir: Path) -> dict[str, Any]:
        requests_dir = job_dir / REQUESTS_NAME  # the run's round requests, written by the agent
        requests_dir.mkdir()
        requests_dir.chmod(0o755)
        return pooled_training_config(key=key, job_dir=job_dir, out_dir=out_dir)


__all__ = ["INPUT_NAMES", "MODEL_NAMES", "REQUESTS_NAME", "TrainingPool", "pooled_training_config"]
