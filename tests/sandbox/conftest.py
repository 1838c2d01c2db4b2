"""Real-engine fixtures for the sandbox suite.

Without a reachable Docker engine these tests skip on a laptop and FAIL in CI (CI set):
a security suite that silently skips proves nothing.
"""

from __future__ import annotations

import copy
import os
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from evaluator import sandbox
from evaluator.artifacts import prepare_model
from evaluator.sandbox import Limits, SandboxRun

N_ROWS = 40
N_FEATURES = 5
DEFAULT_LIMITS = Limits(memory_mb=1024, cpus=1.0, timeout_seconds=120, max_output_mb=16)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(message: str) -> None:
    if _in_ci():
        pytest.fail(f"{message} (CI is set: the sandbox suite must not skip)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # any failure to reach the engine
        _unavailable(f"Docker engine unreachable: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def runner_image(docker_client) -> str:
    try:
        from sandbox_images.build import ensure_runner_image
    except ImportError as exc:
        _unavailable(f"sandbox_images.build is not available: {exc}")
    try:
        return ensure_runner_image()
    except Exception as exc:
        _unavailable(f"the runner image could not be built: {exc}")
        raise


@dataclass
class Site:
    """A site's work area: features, labels next to them (never mounted), a work dir."""

    client: object
    image: str
    root: Path
    features_path: Path
    labels_path: Path
    work_dir: Path
    features: np.ndarray

    def prepare(self, artifact: Path, model_format: str) -> Path:
        dest = self.work_dir / f"model-{len(list(self.work_dir.glob('model-*')))}"
        return prepare_model(artifact, model_format=model_format, dest=dest)

    def run(
        self,
        model_path: Path,
        model_format: str,
        *,
        limits: Limits = DEFAULT_LIMITS,
        batch_size: int = 4096,
    ) -> SandboxRun:
        return sandbox.run_prediction(
            image=self.image,
            model_path=model_path,
            model_format=model_format,
            features_path=self.features_path,
            work_dir=self.work_dir,
            limits=limits,
            batch_size=batch_size,
            client=self.client,
        )

    def run_modified(
        self, model_path: Path, model_format: str, modify: Callable[[dict], None], *, limits=DEFAULT_LIMITS
    ) -> SandboxRun:
        """TEST ONLY: the same run with the container config changed by ``modify``, for
        positive controls (each changes exactly one setting)."""
        prepared = sandbox.prepare_prediction(
            image_id=sandbox.resolve_image(self.client, self.image),
            model_path=model_path,
            model_format=model_format,
            features_path=self.features_path,
            work_dir=self.work_dir,
            limits=limits,
        )
        config = copy.deepcopy(dict(prepared.config))
        modify(config)
        return sandbox.execute(replace(prepared, config=config), limits=limits, client=self.client)

    def run_with_network_mode(
        self, model_path: Path, model_format: str, network_mode: str, *, limits=DEFAULT_LIMITS
    ) -> SandboxRun:
        def modify(config: dict) -> None:
            assert config["network_mode"] == "none"
            config["network_mode"] = network_mode

        return self.run_modified(model_path, model_format, modify, limits=limits)

    def run_with_seccomp(self, model_path: Path, model_format: str, seccomp: str | None) -> SandboxRun:
        """``seccomp=None``: the engine's default profile (nothing pinned); ``"unconfined"``: none."""

        def modify(config: dict) -> None:
            pinned = [opt for opt in config["security_opt"] if opt.startswith("seccomp=")]
            assert pinned == [f"seccomp={sandbox.SECCOMP_PROFILE}"]
            config["security_opt"] = [opt for opt in config["security_opt"] if opt not in pinned]
            if seccomp is not None:
                config["security_opt"].append(f"seccomp={seccomp}")

        return self.run_modified(model_path, model_format, modify)

    def package(self, source: str, files: dict[str, bytes] | None = None) -> Path:
        """A python_package artifact (zip) with ``model.py`` = ``source``, prepared."""
        index = len(list(self.root.glob("pkg-*.zip")))
        artifact = self.root / f"pkg-{index}.zip"
        with zipfile.ZipFile(artifact, "w") as zf:
            zf.writestr("model.py", textwrap.dedent(source))
            for name, data in (files or {}).items():
                zf.writestr(name, data)
        return self.prepare(artifact, "python_package")


@pytest.fixture
def site(tmp_path, docker_client, runner_image) -> Site:
    root = tmp_path / "site"
    root.mkdir()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(N_ROWS, N_FEATURES)).astype(np.float32)
    features_path = root / "features.npy"
    np.save(features_path, features)
    labels_path = root / "labels.npy"
    np.save(labels_path, (features[:, 0] > 0).astype(np.int64))
    work_dir = tmp_path / "work"
    work_dir.mkdir(mode=0o700)
    return Site(
        client=docker_client,
        image=runner_image,
        root=root,
        features_path=features_path,
        labels_path=labels_path,
        work_dir=work_dir,
        features=features,
    )
