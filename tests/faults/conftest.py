"""The fault suite's world: real hub processes, real agents, real sandboxes (tests/faults/world.py).

Without a Docker engine or the runner image the suite skips on a laptop and FAILS in CI."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.faults.world import World


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{message} (CI is set: the fault suite must not skip)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    try:
        import docker

        docker.from_env(timeout=60).ping()
        from sandbox_images.build import ensure_runner_image

        image = ensure_runner_image()
    except Exception as exc:
        _unavailable(f"no Docker engine or runner image: {exc}")
    if shutil.which("faketime") is None:
        _unavailable("faketime is not installed (apt-get install faketime): the clock-skew fault needs it")
    root = tmp_path_factory.mktemp("world")
    world = World(root=root, image=image, n_sites=2).start()
    yield world
    world.stop()
