"""Builds ``vaultbench-stack:<hash>`` (and tags it ``vaultbench-stack:local``) for compose.yaml,
offline like sandbox_images/build.py builds the runner: a debootstrap Debian rootfs with Python,
PostgreSQL and Redis, then the project's wheel and the pinned wheels of its hub and site extras
(deploy/requirements/{hub,site}.txt) installed with ``pip --no-index``. Rebuilds only when an
input changed.

    python deploy/images/build.py
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sandbox_images import build as runner_build  # noqa: E402

log = logging.getLogger("vaultbench.images")
REPOSITORY = "vaultbench-stack"
PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates", "postgresql-15", "redis-server")
DOCKERFILE = Path(__file__).resolve().parent / "Dockerfile.stack"
SOURCES = ("pyproject.toml", "README.md", "marketplace", "evaluator", "sandbox_images")


def _tree_hash(paths) -> str:
    digest = hashlib.sha256()
    for top in paths:
        path = ROOT / top
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ensure_stack_base(client) -> str:
    """A debootstrap rootfs with Python 3.11, PostgreSQL 15 and Redis, imported as an image."""
    key = hashlib.sha256(repr((runner_build.DEBIAN_SUITE, PACKAGES)).encode()).hexdigest()[:16]
    ref = f"{REPOSITORY}-base:{key}"
    if runner_build._image_id(client, ref):
        return ref
    mirror = runner_build.host_debian_mirror()
    log.info("debootstrap %s with %s from %s", runner_build.DEBIAN_SUITE, ", ".join(PACKAGES), mirror)
    with tempfile.TemporaryDirectory(prefix="vaultbench-stack-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        runner_build._run(["debootstrap", "--variant=minbase", f"--arch={runner_build._debian_arch()}",
                           "--include=" + ",".join(PACKAGES), runner_build.DEBIAN_SUITE, str(root), mirror],
                          what="debootstrap")  # fmt: skip
        runner_build._finish_rootfs(root)
        tarball = Path(tmp) / "rootfs.tar"
        runner_build._run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tarball), "."],
                          what="tar of the stack rootfs")  # fmt: skip
        repository, tag = ref.split(":", 1)
        client.api.import_image_from_file(str(tarball), repository=repository, tag=tag,
                                          changes=["ENV LANG=C.UTF-8", 'CMD ["python3"]'])  # fmt: skip
    return ref


def ensure_stack_image() -> str:
    client = runner_build._docker_client()
    base = ensure_stack_base(client)
    locks = [ROOT / "deploy/requirements/hub.txt", ROOT / "deploy/requirements/site.txt"]
    key = hashlib.sha256(
        (base + _tree_hash(SOURCES) + DOCKERFILE.read_text() + "".join(p.read_text() for p in locks)).encode()
    ).hexdigest()[:16]
    ref = f"{REPOSITORY}:{key}"
    if not runner_build._image_id(client, ref):
        with tempfile.TemporaryDirectory(prefix="vaultbench-stack-ctx-", dir="/var/tmp") as tmp:
            ctx = Path(tmp)
            union = ctx / "requirements.txt"
            union.write_text("".join(sorted({line for p in locks for line in p.read_text().splitlines(True)
                                             if line.strip() and not line.startswith("#")})))  # fmt: skip
            wheelhouse = runner_build.ensure_wheelhouse(requirements=union)
            (ctx / "wheelhouse").mkdir()
            for wheel in wheelhouse.glob("*.whl"):
                os.link(wheel, ctx / "wheelhouse" / wheel.name)  # same file system (/var): docker's cache sees the same bytes
            src = ctx / "src"
            src.mkdir()
            for name in SOURCES:
                (shutil.copy2 if (ROOT / name).is_file() else shutil.copytree)(ROOT / name, src / name)
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(ctx / "project"), str(src)], check=True)  # fmt: skip
            shutil.rmtree(src)
            shutil.copy2(DOCKERFILE, ctx / "Dockerfile")
            started = time.monotonic()
            log.info("building %s", ref)
            runner_build._run(["docker", "build", "--network", "none", "--build-arg", f"BASE={base}",
                               "-t", ref, str(ctx)], what="docker build of the stack image")  # fmt: skip
            log.info("built %s in %.0f s", ref, time.monotonic() - started)
    client.images.get(ref).tag(REPOSITORY, "local")
    return ref


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(ensure_stack_image())
