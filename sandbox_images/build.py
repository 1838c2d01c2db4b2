"""Build the sandbox runner image, offline by default.

    python -m sandbox_images.build [--base-image IMAGE] [--offline] [--force]

Three cached steps, each keyed by its content:

1. Base image. Without ``--base-image``: a Debian bookworm rootfs made with ``debootstrap``
   from the host's apt mirror and ``docker import``-ed as ``vaultbench-base:<hash>`` (no image
   registry needed; data owners' networks are often air-gapped). With ``--base-image`` (for
   example ``python:3.11-slim``): that image, pulled when missing unless ``--offline``.
2. Wheelhouse: the exact pinned wheels of ``requirements-runner.txt`` for CPython 3.11 on this
   machine's architecture, downloaded once with pip into ``var/wheelhouse/<hash>/``.
3. Runner image ``vaultbench-runner:<hash>``, built with ``--network none`` from
   ``Dockerfile.runner``; the hash covers the Dockerfile, the requirements, every file of
   ``evaluator/runner/`` and the base image id, so an unchanged tree reuses the image.

``ensure_runner_image()`` is the importable entry point; it returns the image reference and
writes it to ``var/images/runner.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("sandbox_images.build")

# Bump when the way the base rootfs is made changes, so the base tag changes with it.
BASE_SCRIPT_VERSION = "1"
DEBIAN_SUITE = "bookworm"  # its python3 is 3.11, matching the cp311 wheels
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates")
BASE_REPOSITORY = "vaultbench-base"
RUNNER_REPOSITORY = "vaultbench-runner"
PYTHON_VERSION = "3.11"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DOCKERFILE = PACKAGE_DIR / "Dockerfile.runner"
REQUIREMENTS = PACKAGE_DIR / "requirements-runner.txt"
RUNNER_SOURCE = REPO_ROOT / "evaluator" / "runner"
VAR_DIR = REPO_ROOT / "var"
WHEELHOUSE_ROOT = VAR_DIR / "wheelhouse"
IMAGES_DIR = VAR_DIR / "images"
RUNNER_REF_FILE = IMAGES_DIR / "runner.txt"

_IGNORED_NAMES = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
_IGNORED_SUFFIXES = (".pyc", ".pyo")


class ImageBuildError(RuntimeError):
    """The image could not be built; the message says why and what to do."""


# --- content hashing -----------------------------------------------------------------------


def _runner_files(runner_dir: Path) -> list[Path]:
    files = []
    for path in sorted(runner_dir.rglob("*")):
        rel = path.relative_to(runner_dir)
        if any(part in _IGNORED_NAMES for part in rel.parts) or path.name.endswith(_IGNORED_SUFFIXES):
            continue
        if path.is_symlink():
            raise ImageBuildError(f"{path}: symlinks are not allowed in the runner package")
        if path.is_file():
            files.append(path)
    return files


def runner_content_hash(*, dockerfile: Path, requirements: Path, runner_dir: Path, base_image_id: str) -> str:
    """Return the 16-hex-digit content tag of a runner image.

    Covers the Dockerfile, the requirements, the path and bytes of every file under
    ``runner_dir`` (caches excluded) and the base image id.
    """
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    add("dockerfile", dockerfile.read_bytes())
    add("requirements", requirements.read_bytes())
    for path in _runner_files(runner_dir):
        add("runner:" + path.relative_to(runner_dir).as_posix(), path.read_bytes())
    add("base", base_image_id.encode())
    return digest.hexdigest()[:16]


def base_content_hash(*, suite: str = DEBIAN_SUITE, packages=BASE_PACKAGES) -> str:
    """Return the 16-hex-digit tag of the offline base image (packages, suite, script)."""
    spec = {
        "suite": suite,
        "packages": sorted(packages),
        "variant": "minbase",
        "arch": _debian_arch(),
        "script": BASE_SCRIPT_VERSION,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


# --- Debian mirror from the host's apt sources ---------------------------------------------

_MIRROR_SCHEMES = ("http://", "https://", "ftp://", "file:/")


def parse_debian_mirror(*, deb822: str = "", sources_list: str = "", suite: str = DEBIAN_SUITE) -> str | None:
    """Return the first ``deb`` URI that serves ``suite`` exactly, or None.

    ``deb822`` is the text of ``*.sources`` files (stanzas of ``Field: value``), and
    ``sources_list`` the one-line format of ``sources.list``. Stanzas for ``suite-security``
    or ``suite-updates`` do not count: debootstrap needs the main archive.
    """
    for stanza in _deb822_stanzas(deb822):
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        if suite not in stanza.get("suites", "").split():
            continue
        for uri in stanza.get("uris", "").split():
            if uri.startswith(_MIRROR_SCHEMES):
                return uri.rstrip("/")
    for raw in sources_list.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2 and words[1] == suite and words[0].startswith(_MIRROR_SCHEMES):
            return words[0].rstrip("/")
    return None


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    stanza: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
        elif line[0] in " \t" and key:  # continuation line
            stanza[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def host_debian_mirror(*, apt_dir: Path = Path("/etc/apt"), suite: str = DEBIAN_SUITE) -> str:
    """The Debian mirror this host's apt uses (override: VAULTBENCH_DEBIAN_MIRROR)."""
    override = os.environ.get("VAULTBENCH_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    deb822 = "\n\n".join(
        p.read_text(errors="replace") for p in sorted(apt_dir.glob("sources.list.d/*.sources"))
    )
    one_line = "\n".join(
        p.read_text(errors="replace")
        for p in [apt_dir / "sources.list", *sorted(apt_dir.glob("sources.list.d/*.list"))]
        if p.is_file()
    )
    mirror = parse_debian_mirror(deb822=deb822, sources_list=one_line, suite=suite)
    if mirror is None:
        log.warning("no apt source for %s found under %s; using %s", suite, apt_dir, DEFAULT_DEBIAN_MIRROR)
        return DEFAULT_DEBIAN_MIRROR
    return mirror


# --- helpers ---------------------------------------------------------------------------------


def _debian_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def _wheel_arch() -> str:
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(_debian_arch(), platform.machine())


def _run(cmd: list[str], *, what: str) -> None:
    log.info("$ %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError as exc:
        raise ImageBuildError(f"{what}: {cmd[0]} is not installed") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Serialize builds on this checkout (tests, agents and CI may call us at once)."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with open(IMAGES_DIR / ".build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _docker_client():
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - it is in requirements.txt
        raise ImageBuildError("the 'docker' Python package is missing") from exc
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:
        raise ImageBuildError(
            f"cannot reach the Docker engine ({exc}); start it with .ci/lib/docker-engine.sh"
        ) from exc
    return client


def _image_id(client, ref: str) -> str | None:
    import docker.errors

    try:
        return client.images.get(ref).id
    except docker.errors.ImageNotFound:
        return None


# --- step 1: base image ----------------------------------------------------------------------


def ensure_offline_base(client, *, force: bool = False) -> str:
    """Return ``vaultbench-base:<hash>``, building it with debootstrap when missing."""
    ref = f"{BASE_REPOSITORY}:{base_content_hash()}"
    if not force and _image_id(client, ref):
        log.info("base image %s already exists", ref)
        return ref
    if os.geteuid() != 0:
        raise ImageBuildError("building the offline base image needs root (debootstrap)")
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            "debootstrap is not installed; run .ci/lib/docker-engine.sh or "
            "apt-get install debootstrap (or pass --base-image python:3.11-slim)"
        )
    mirror = host_debian_mirror()
    log.info("building base image %s: debootstrap %s from %s", ref, DEBIAN_SUITE, mirror)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vaultbench-base-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--arch={_debian_arch()}",
                "--include=" + ",".join(BASE_PACKAGES),
                DEBIAN_SUITE,
                str(root),
                mirror,
            ],
            what="debootstrap",
        )
        _finish_rootfs(root)
        tarball = Path(tmp) / "rootfs.tar"
        _run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tarball), "."],
            what="tar of the base rootfs",
        )
        repository, tag = ref.split(":", 1)
        log.info("importing %s (%d MiB)", ref, tarball.stat().st_size >> 20)
        client.api.import_image_from_file(
            str(tarball),
            repository=repository,
            tag=tag,
            changes=[
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                'CMD ["python3"]',
            ],
        )
    if not _image_id(client, ref):
        raise ImageBuildError(f"docker import did not produce {ref}")
    log.info("base image %s built in %.0f s", ref, time.monotonic() - started)
    return ref


def _finish_rootfs(root: Path) -> None:
    """`python` -> python3, pip may install system-wide, no apt caches or logs."""
    python = root / "usr/bin/python"
    if python.is_symlink() or python.exists():
        python.unlink()
    python.symlink_to("python3")
    for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for pattern in (
        "var/cache/apt/archives/*.deb",
        "var/cache/apt/*.bin",
        "var/lib/apt/lists/*",
        "var/log/*.log",
        "var/log/apt/*",
        "debootstrap",
    ):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name != "lock":
                path.unlink()


def ensure_base_image(client, *, base_image: str | None, offline: bool, force: bool) -> str:
    """Return the reference of the base image to build on, making or pulling it as needed."""
    if base_image is None:
        return ensure_offline_base(client, force=force)
    if _image_id(client, base_image):
        return base_image
    if offline:
        raise ImageBuildError(
            f"base image {base_image} is not present locally and --offline forbids pulling it"
        )
    log.info("pulling base image %s", base_image)
    try:
        client.images.pull(base_image)
    except Exception as exc:
        raise ImageBuildError(
            f"cannot pull {base_image} ({exc}); without a registry, omit --base-image to "
            "build the offline Debian base"
        ) from exc
    return base_image


# --- step 2: wheelhouse ----------------------------------------------------------------------


def ensure_wheelhouse(*, requirements: Path = REQUIREMENTS, offline: bool = False) -> Path:
    """Return a folder holding exactly the pinned wheels, downloading them once."""
    platforms = [
        f"manylinux_2_36_{_wheel_arch()}",  # bookworm's glibc; pip accepts older tags too
        f"manylinux_2_28_{_wheel_arch()}",
        f"manylinux_2_17_{_wheel_arch()}",
        f"manylinux2014_{_wheel_arch()}",
    ]
    key = hashlib.sha256(
        requirements.read_bytes() + json.dumps([PYTHON_VERSION, platforms]).encode()
    ).hexdigest()[:16]
    target = WHEELHOUSE_ROOT / key
    if (target / ".complete").is_file():
        log.info("wheelhouse %s is cached", target.relative_to(REPO_ROOT))
        return target
    if offline:
        raise ImageBuildError(
            f"no wheelhouse at {target} and --offline forbids downloading one; run the "
            "builder once without --offline where the package index is reachable, or copy "
            "var/wheelhouse/ from such a machine"
        )
    WHEELHOUSE_ROOT.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=WHEELHOUSE_ROOT))
    try:
        cmd = [
            sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
            "--only-binary=:all:", "--no-deps",  # the requirements list is the full closure
            "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp311",
        ]  # fmt: skip
        for plat in platforms:
            cmd += ["--platform", plat]
        cmd += ["-r", str(requirements), "-d", str(partial)]
        log.info("downloading the runner wheels into %s", target.relative_to(REPO_ROOT))
        _run(cmd, what="pip download of the runner wheels")
        (partial / ".complete").write_text("")
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return target


# --- step 3: runner image --------------------------------------------------------------------


def _assemble_context(ctx: Path, *, wheelhouse: Path, runner_dir: Path) -> None:
    shutil.copy2(DOCKERFILE, ctx / "Dockerfile.runner")
    shutil.copy2(REQUIREMENTS, ctx / "requirements-runner.txt")
    (ctx / "wheelhouse").mkdir()
    for wheel in wheelhouse.glob("*.whl"):
        try:
            os.link(wheel, ctx / "wheelhouse" / wheel.name)
        except OSError:
            shutil.copy2(wheel, ctx / "wheelhouse" / wheel.name)
    dest = ctx / "runner"
    for path in _runner_files(runner_dir):
        target = dest / path.relative_to(runner_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        target.chmod(0o644)  # readable by the sandbox user, writable by nobody in the image
    for folder in [dest, *(p for p in dest.rglob("*") if p.is_dir())]:
        folder.chmod(0o755)


def _build_runner(
    client, *, ref: str, base_ref: str, wheelhouse: Path, runner_dir: Path, nocache: bool
) -> None:
    import docker.errors

    VAR_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="runner-context-", dir=VAR_DIR) as tmp:
        ctx = Path(tmp)
        _assemble_context(ctx, wheelhouse=wheelhouse, runner_dir=runner_dir)
        log.info("building %s on %s (network: none)", ref, base_ref)
        try:
            stream = client.api.build(
                path=str(ctx),
                dockerfile="Dockerfile.runner",
                tag=ref,
                buildargs={"BASE_IMAGE": base_ref},
                network_mode="none",
                pull=False,
                rm=True,
                forcerm=True,
                nocache=nocache,
                labels={"org.vaultbench.image": "runner"},
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    raise ImageBuildError(f"docker build of {ref} failed: {chunk['error']}")
                line = chunk.get("stream", "").rstrip()
                if line:
                    log.info("  %s", line)
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"docker build of {ref} failed: {exc}") from exc


def ensure_runner_image(
    *,
    base_image: str | None = None,
    offline: bool = False,
    force: bool = False,
    runner_dir: Path | None = None,
) -> str:
    """Return the reference of an up-to-date runner image, building only what is missing.

    ``base_image=None`` builds on the offline Debian base (no registry needed); otherwise on
    that image (e.g. ``python:3.11-slim``), pulled if missing unless ``offline``. ``force``
    rebuilds the base (when offline) and the runner. The reference is a content tag,
    ``vaultbench-runner:<16 hex>``, also written to ``var/images/runner.txt``.
    """
    runner_dir = Path(runner_dir) if runner_dir is not None else RUNNER_SOURCE
    if not runner_dir.is_dir():
        raise ImageBuildError(
            f"the in-sandbox runner package {runner_dir} does not exist; it is copied into "
            "the image and must be there before the image can be built"
        )
    if not (runner_dir / "__main__.py").is_file():
        raise ImageBuildError(f"{runner_dir} has no __main__.py; the sandbox runs it as `python -m runner`")
    client = _docker_client()
    with _build_lock():
        base_ref = ensure_base_image(client, base_image=base_image, offline=offline, force=force)
        base_id = _image_id(client, base_ref)
        if base_id is None:  # pragma: no cover - ensure_base_image checked it
            raise ImageBuildError(f"base image {base_ref} vanished")
        tag = runner_content_hash(
            dockerfile=DOCKERFILE,
            requirements=REQUIREMENTS,
            runner_dir=runner_dir,
            base_image_id=base_id,
        )
        ref = f"{RUNNER_REPOSITORY}:{tag}"
        if not force and _image_id(client, ref):
            log.info("runner image %s is up to date", ref)
        else:
            started = time.monotonic()
            wheelhouse = ensure_wheelhouse(offline=offline)
            _build_runner(
                client,
                ref=ref,
                base_ref=base_ref,
                wheelhouse=wheelhouse,
                runner_dir=runner_dir,
                nocache=force,
            )
            if not _image_id(client, ref):
                raise ImageBuildError(f"docker build finished without producing {ref}")
            log.info("runner image %s built in %.0f s", ref, time.monotonic() - started)
        IMAGES_DIR.mkdir(parents=True, exist_ok=True)
        tmp_ref = RUNNER_REF_FILE.with_suffix(".tmp")
        tmp_ref.write_text(ref + "\n")
        tmp_ref.replace(RUNNER_REF_FILE)
    return ref


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox_images.build",
        description="Build the sandbox runner image (offline Debian base by default).",
    )
    parser.add_argument(
        "--base-image",
        help="build on this image (e.g. python:3.11-slim) instead of the offline Debian base",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="never pull images or download wheels; use only local images and var/wheelhouse",
    )
    parser.add_argument(
        "--force", action="store_true", help="rebuild the base and runner images even if cached"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        ref = ensure_runner_image(base_image=args.base_image, offline=args.offline, force=args.force)
    except ImageBuildError as exc:
        log.error("error: %s", exc)
        return 1
    print(ref)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
