"""The engine's OCI runtime for sandboxes: ``runc`` (the default) or ``runsc`` (gVisor).

gVisor runs the vendor's code against a user-space kernel: what the seccomp profile filters in
the host kernel is then answered by gVisor, and a kernel bug the model might reach is gVisor's,
not the host's. Debian ships it as the ``runsc`` package; the engine learns of it from
``/etc/docker/daemon.json`` (``.ci/lib/docker-engine.sh`` writes it, then SIGHUP reloads the
runtimes without restarting the engine)::

    {"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}}

``--network=none``: sandboxes have no network anyway, and gVisor cannot set up its own network
stack in an engine started without a bridge. The site picks it with ``sandbox_runtime = "runsc"``
in ``site.toml``; an engine without it fails each run as the site's fault (``internal_error``),
and the agent says so at start. Fine-tuning sessions keep the engine's default runtime.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT = "runc"


def engine_runtimes(client: Any | None = None) -> set[str]:
    """The OCI runtimes the engine knows (``docker info``)."""
    from evaluator.sandbox import get_client

    client = client or get_client()
    return set((client.info().get("Runtimes") or {}).keys())


def run_prediction_with(runtime: str) -> Any:
    """``evaluator.sandbox.run_prediction`` under ``runtime``."""
    from evaluator import sandbox

    if runtime == DEFAULT:
        return sandbox.run_prediction

    def run(
        *, image: str, model_path: Path, model_format: str, features_path: Path, work_dir: Path,
        limits: Any, batch_size: int = 4096, client: Any = None, weights_offset_path: Path | None = None,
    ) -> Any:  # fmt: skip
        client = client or sandbox.get_client()
        if runtime not in engine_runtimes(client):
            raise sandbox.SandboxUnavailable(f"the engine has no {runtime!r} runtime (see evaluator/sandbox_runtime.py)")
        prepared = sandbox.prepare_prediction(
            image_id=sandbox.resolve_image(client, image), model_path=model_path, model_format=model_format,
            features_path=features_path, work_dir=work_dir, limits=limits, batch_size=batch_size,
            weights_offset_path=weights_offset_path,
        )  # fmt: skip
        prepared = replace(prepared, config={**prepared.config, "runtime": runtime})
        return sandbox.execute(prepared, limits=limits, client=client)

    return run
