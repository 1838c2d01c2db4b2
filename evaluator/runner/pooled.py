"""A pre-started runner: imports its format's runtime, then waits for exactly one job.

The site agent's warm pool (``evaluator.sandbox_pool``) starts the container with the same
hardened profile as any prediction run and ``python -m runner pooled --format F``. The runner
imports what format ``F`` needs, writes ``/out/.ready`` (the host's "imports done"), and waits for
``/job/request.json``: the host places the model and the features in ``/job`` (mounted read-only),
removes ``.ready`` and then renames the request into place (atomic: never read half-written). The
runner predicts once, writes ``/out/predictions.npy`` and the process ends: one container, one job.

A file, not a FIFO, so that it works under gVisor too (a host FIFO on a bind mount does not
connect to the sandbox's pipe there). Waiting costs a ``stat`` every 5 ms at most.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .errors import EXIT_INPUT, RunnerError
from .loaders import warm_imports

JOB_DIR = Path("/job")
REQUEST_NAME = "request.json"
READY_NAME = ".ready"
POLL_SECONDS = (0.001, 0.005)  # from, growing to
# A pooled container whose agent died (killed, or exited without closing its pool) must not wait
# forever: with no request by then it exits (its agent retires it well before, see sandbox_pool).
IDLE_EXIT_SECONDS = 1800
EXIT_IDLE = 9
FEATURES_NAME = "features.npy"
OFFSET_NAME = "weights_offset.safetensors"
# Where the host places the model in /job, per format (a folder for python_package).
MODEL_NAMES = {
    "torchscript": "model.pt",
    "sklearn": "model.joblib",
    "onnx": "model.onnx",
    "python_package": "model",
    "compiled": "model",
}
COMPILED_NAME = "compiled"  # the folder in /out a conversion is written to
MAX_REQUEST_BYTES = 4096
MAX_BATCH_SIZE = 1 << 20


def read_request(path: Path) -> dict:
    """Wait until the host has placed the job request; return it, checked."""
    pause, longest = POLL_SECONDS
    give_up = time.monotonic() + IDLE_EXIT_SECONDS
    while True:
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_REQUEST_BYTES + 1)
            break
        except FileNotFoundError:
            if time.monotonic() > give_up:
                raise RunnerError(EXIT_IDLE, "no job came; a pooled runner does not wait forever") from None
            time.sleep(pause)
            pause = min(longest, pause * 1.5)
        except OSError as exc:
            raise RunnerError(EXIT_INPUT, f"cannot read the job request: {type(exc).__name__}") from exc
    try:
        request = json.loads(raw)
    except ValueError as exc:
        raise RunnerError(EXIT_INPUT, "the job request is not JSON") from exc
    batch_size = request.get("batch_size") if isinstance(request, dict) else None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise RunnerError(EXIT_INPUT, "the job request has no valid batch_size")
    return request


def serve_one(*, model_format: str, job_dir: Path, output_path: Path, plain_sklearn: bool = False) -> None:
    """``plain_sklearn``: for a scikit-learn job, import what reading the pickle without
    scikit-learn needs (``plain_sklearn.py``) rather than scikit-learn itself, which a job whose
    model needs it then imports (the pool chooses from the site's last scikit-learn job)."""
    if plain_sklearn and model_format == "sklearn":
        from .plain_sklearn import warm

        warm()
    else:
        warm_imports(model_format)
    # Tells the host the imports are done (its pool reports ready containers); the host removes
    # it before it signals the job, so the output folder holds only what the job writes.
    os.close(os.open(output_path.parent / READY_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    request = read_request(job_dir / REQUEST_NAME)
    from .predict import run_predict

    run_predict(
        model_format=model_format,
        model_path=job_dir / MODEL_NAMES[model_format],
        features_path=job_dir / FEATURES_NAME,
        output_path=output_path,
        batch_size=request["batch_size"],
        weights_offset=job_dir / OFFSET_NAME if request.get("weights_offset") else None,
        compile_to=output_path.parent / COMPILED_NAME if request.get("compile") is True else None,
    )
