"""The sandbox runner image builder: mirror parsing, content tags, and the real image."""

import os
import shutil
import time
from pathlib import Path

import pytest

from sandbox_images import build

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_parse_debian_mirror_reads_the_main_suite_from_deb822():
    assert build.parse_debian_mirror(deb822=DEB822) == "http://deb.debian.org/debian"


def test_parse_debian_mirror_skips_security_disabled_and_source_stanzas():
    text = """\
Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security

Types: deb-src
URIs: http://src.example/debian/
Suites: bookworm

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm

Types: deb
URIs: http://mirror.example/debian/
Suites: bookworm
"""
    assert build.parse_debian_mirror(deb822=text) == "http://mirror.example/debian"


def test_parse_debian_mirror_reads_one_line_sources_with_options():
    text = """\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.example/debian/ bookworm main
"""
    assert build.parse_debian_mirror(sources_list=text) == "http://mirror.example/debian"


def test_parse_debian_mirror_returns_none_when_no_source_serves_the_suite():
    assert build.parse_debian_mirror(deb822=DEB822, suite="trixie") is None
    assert build.parse_debian_mirror(sources_list="deb cdrom:[Debian]/ bookworm main") is None


def test_host_debian_mirror_reads_sources_files_and_honours_the_override(tmp_path, monkeypatch):
    monkeypatch.delenv("VAULTBENCH_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert build.host_debian_mirror(apt_dir=tmp_path) == "http://deb.debian.org/debian"
    monkeypatch.setenv("VAULTBENCH_DEBIAN_MIRROR", "http://local.mirror/debian/")
    assert build.host_debian_mirror(apt_dir=tmp_path) == "http://local.mirror/debian"


def _runner_hash(runner_dir: Path, base_id: str = "sha256:base") -> str:
    return build.runner_content_hash(
        dockerfile=build.DOCKERFILE,
        requirements=build.REQUIREMENTS,
        runner_dir=runner_dir,
        base_image_id=base_id,
    )


def test_runner_tag_changes_with_the_runner_content_only(tmp_path):
    runner = tmp_path / "runner"
    if build.RUNNER_SOURCE.is_dir():
        shutil.copytree(build.RUNNER_SOURCE, runner, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        runner.mkdir()
        (runner / "__main__.py").write_text("print('runner')\n")
    original = _runner_hash(runner)
    assert len(original) == 16
    assert _runner_hash(runner) == original

    (runner / "__pycache__").mkdir(exist_ok=True)
    (runner / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert _runner_hash(runner) == original, "bytecode caches must not change the tag"

    main = runner / "__main__.py"
    main.write_text(main.read_text() + "\n# changed\n")
    changed = _runner_hash(runner)
    assert changed != original

    (runner / "extra.py").write_text("")
    assert _runner_hash(runner) != changed
    assert _runner_hash(runner, "sha256:other-base") != _runner_hash(runner)


def test_base_tag_depends_on_the_package_list():
    assert build.base_content_hash() == build.base_content_hash()
    assert build.base_content_hash(packages=(*build.BASE_PACKAGES, "curl")) != (build.base_content_hash())


# --- real Docker engine ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Docker engine unreachable in CI: {exc}")
        pytest.skip(f"Docker engine unreachable: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def runner_image(docker_client):
    # Cold, this builds the offline base and the runner (minutes); warm, it is a lookup.
    return build.ensure_runner_image()


@pytest.mark.docker
def test_runner_image_imports_the_runtimes_as_nobody_without_network(docker_client, runner_image):
    image = docker_client.images.get(runner_image)
    assert image.attrs["Config"]["User"] == "65534:65534"
    script = (
        "import os, socket, torch, sklearn, onnxruntime, safetensors, numpy, runner;"
        "print(os.getuid(), os.getgid(), sorted(n for _, n in socket.if_nameindex()))"
    )
    out = docker_client.containers.run(
        runner_image,
        ["python", "-c", script],
        network_mode="none",
        read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,noexec,size=64m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        remove=True,
    )
    assert out.decode().split() == ["65534", "65534", "['lo']"]


@pytest.mark.docker
def test_ensure_runner_image_twice_reuses_the_image(docker_client, runner_image, monkeypatch):
    image_id = docker_client.images.get(runner_image).id

    def no_build(*args, **kwargs):
        raise AssertionError("a cached image must not be rebuilt")

    monkeypatch.setattr(build, "_build_runner", no_build)
    monkeypatch.setattr(build, "_run", no_build)  # no debootstrap, no pip download
    started = time.monotonic()
    again = build.ensure_runner_image()
    elapsed = time.monotonic() - started

    assert again == runner_image
    assert docker_client.images.get(again).id == image_id
    assert elapsed < 30
    assert build.RUNNER_REF_FILE.read_text().strip() == runner_image
