"""Artifact hashing and the safe unpacking of python_package archives."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zipfile

import pytest

from evaluator.artifacts import (
    ArtifactMismatch,
    InvalidArtifact,
    prepare_model,
    sha256_file,
    verify_sha256,
)

MODEL_PY = b"def load(d):\n    return None\n\ndef predict(m, x):\n    return x[:, 0]\n"


def make_zip(path, members: dict[str, bytes], *, symlinks: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def make_tar(path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode="w:gz"):
    with tarfile.open(path, mode) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                name, data = m
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


# --- hashing ----------------------------------------------------------------------------


def test_sha256_file(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(b"hello" * 100_000)
    assert sha256_file(path) == hashlib.sha256(b"hello" * 100_000).hexdigest()


def test_verify_sha256_accepts_match_any_case(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(b"x")
    verify_sha256(path, hashlib.sha256(b"x").hexdigest().upper())


@pytest.mark.parametrize("expected", ["0" * 64, "", "zz" * 32, "abc"])
def test_verify_sha256_mismatch(tmp_path, expected):
    path = tmp_path / "a"
    path.write_bytes(b"x")
    with pytest.raises(ArtifactMismatch) as err:
        verify_sha256(path, expected)
    assert err.value.reason == "artifact_mismatch"


# --- single-file formats ----------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt,name", [("torchscript", "model.pt"), ("sklearn", "model.joblib"), ("onnx", "model.onnx")]
)
def test_single_file_formats_are_copied_under_a_fixed_name(tmp_path, fmt, name):
    artifact = tmp_path / "vendor name; rm -rf.bin"
    artifact.write_bytes(b"opaque bytes, never loaded here")
    result = prepare_model(artifact, model_format=fmt, dest=tmp_path / "model")
    assert result == tmp_path / "model" / name
    assert result.read_bytes() == artifact.read_bytes()
    assert result.stat().st_mode & 0o004


def test_symlinked_artifact_refused(tmp_path):
    (tmp_path / "link").symlink_to("/etc/passwd")
    with pytest.raises(InvalidArtifact):
        prepare_model(tmp_path / "link", model_format="sklearn", dest=tmp_path / "model")


def test_unknown_format(tmp_path):
    artifact = tmp_path / "a"
    artifact.write_bytes(b"x")
    with pytest.raises(InvalidArtifact):
        prepare_model(artifact, model_format="pickle", dest=tmp_path / "model")


def test_non_empty_dest_refused(tmp_path):
    artifact = tmp_path / "a"
    artifact.write_bytes(b"x")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "x").write_bytes(b"")
    with pytest.raises(ValueError):
        prepare_model(artifact, model_format="sklearn", dest=tmp_path / "model")


# --- python_package: accepted -----------------------------------------------------------


def test_zip_package(tmp_path):
    artifact = make_zip(
        tmp_path / "pkg.zip",
        {"model.py": MODEL_PY, "weights/w.safetensors": b"w", "helpers/": b""},
    )
    dest = prepare_model(artifact, model_format="python_package", dest=tmp_path / "model")
    assert (dest / "model.py").read_bytes() == MODEL_PY
    assert (dest / "weights" / "w.safetensors").read_bytes() == b"w"
    for path in dest.rglob("*"):
        mode = path.stat().st_mode
        assert mode & 0o004 and not mode & 0o022
        assert not mode & (stat.S_ISUID | stat.S_ISGID)


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_tar_package_including_dot_entries(tmp_path, mode):
    root = tarfile.TarInfo(".")
    root.type = tarfile.DIRTYPE
    setuid = tarfile.TarInfo("./run.py")
    setuid.mode = 0o4755
    members = [root, ("./model.py", MODEL_PY), ("w.safetensors", b"w"), setuid]
    artifact = make_tar(tmp_path / "pkg.tar", members, mode=mode)
    dest = prepare_model(artifact, model_format="python_package", dest=tmp_path / "model")
    assert (dest / "model.py").read_bytes() == MODEL_PY
    assert (dest / "w.safetensors").read_bytes() == b"w"
    assert not (dest / "run.py").stat().st_mode & stat.S_ISUID


def test_archive_type_is_detected_by_content_not_name(tmp_path):
    artifact = make_zip(tmp_path / "pkg.tar.gz", {"model.py": MODEL_PY})
    dest = prepare_model(artifact, model_format="python_package", dest=tmp_path / "model")
    assert (dest / "model.py").exists()


# --- python_package: refused ------------------------------------------------------------


def refused(tmp_path, artifact, **kwargs):
    dest = tmp_path / "model"
    with pytest.raises(InvalidArtifact) as err:
        prepare_model(artifact, model_format="python_package", dest=dest, **kwargs)
    assert err.value.reason == "invalid_artifact"
    assert not dest.exists() or not any(dest.iterdir())  # nothing half-unpacked is left


@pytest.mark.parametrize("name", ["/etc/cron.d/x", "../escape.py", "a/../../escape.py", "C:x"])
def test_zip_path_tricks(tmp_path, name):
    refused(tmp_path, make_zip(tmp_path / "p.zip", {"model.py": MODEL_PY, name: b"x"}))
    assert not (tmp_path / "escape.py").exists()


@pytest.mark.parametrize("name", ["/etc/cron.d/x", "../escape.py", "a/../../escape.py"])
def test_tar_path_tricks(tmp_path, name):
    refused(tmp_path, make_tar(tmp_path / "p.tgz", [("model.py", MODEL_PY), (name, b"x")]))
    assert not (tmp_path / "escape.py").exists()


def test_zip_backslash_name(tmp_path):
    refused(tmp_path, make_zip(tmp_path / "p.zip", {"model.py": MODEL_PY, "..\\x.py": b"x"}))


def test_zip_symlink_member(tmp_path):
    artifact = make_zip(tmp_path / "p.zip", {"model.py": MODEL_PY}, symlinks={"secrets": "/etc/shadow"})
    refused(tmp_path, artifact)


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE]
)
def test_tar_link_and_special_members(tmp_path, kind):
    info = tarfile.TarInfo("weights.safetensors")
    info.type = kind
    info.linkname = "/etc/shadow" if kind == tarfile.SYMTYPE else "model.py"
    refused(tmp_path, make_tar(tmp_path / "p.tgz", [("model.py", MODEL_PY), info]))


def test_tar_symlinked_model_py(tmp_path):
    info = tarfile.TarInfo("model.py")
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    refused(tmp_path, make_tar(tmp_path / "p.tgz", [info]))


def test_too_many_entries_zip(tmp_path):
    members = {"model.py": MODEL_PY, **{f"f{i}": b"" for i in range(20)}}
    refused(tmp_path, make_zip(tmp_path / "p.zip", members), max_entries=10)


def test_too_many_entries_tar(tmp_path):
    members = [("model.py", MODEL_PY)] + [(f"f{i}", b"") for i in range(20)]
    refused(tmp_path, make_tar(tmp_path / "p.tgz", members), max_entries=10)


def test_zip_bomb_by_size(tmp_path):
    artifact = make_zip(tmp_path / "p.zip", {"model.py": MODEL_PY, "bomb": b"\0" * 5_000_000})
    assert artifact.stat().st_size < 100_000
    refused(tmp_path, artifact, max_total_bytes=1_000_000)


def test_zip_bomb_with_a_lying_declared_size(tmp_path):
    artifact = make_zip(tmp_path / "p.zip", {"model.py": MODEL_PY, "bomb": b"\0" * 5_000_000})
    data = bytearray(artifact.read_bytes())
    # Patch the declared uncompressed size of "bomb" (local header and central directory) to 1.
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (pos := data.find(sig, start)) != -1:
            name_len_off = 26 if sig == b"PK\x03\x04" else 28
            name_len = int.from_bytes(data[pos + name_len_off : pos + name_len_off + 2], "little")
            name_start = pos + (30 if sig == b"PK\x03\x04" else 46)
            if bytes(data[name_start : name_start + name_len]) == b"bomb":
                data[pos + off : pos + off + 4] = (1).to_bytes(4, "little")
            start = pos + 4
    artifact.write_bytes(bytes(data))
    dest = tmp_path / "model"
    with pytest.raises(InvalidArtifact):
        prepare_model(artifact, model_format="python_package", dest=dest, max_total_bytes=1_000_000)
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) if dest.exists() else 0
    assert total <= 1_000_000


def test_tar_bomb_by_size(tmp_path):
    artifact = make_tar(tmp_path / "p.tgz", [("model.py", MODEL_PY), ("bomb", b"\0" * 5_000_000)])
    assert artifact.stat().st_size < 100_000
    refused(tmp_path, artifact, max_total_bytes=1_000_000)


def test_missing_model_py(tmp_path):
    refused(tmp_path, make_zip(tmp_path / "p.zip", {"other.py": MODEL_PY}))


def test_model_py_not_at_the_root(tmp_path):
    refused(tmp_path, make_zip(tmp_path / "p.zip", {"pkg/model.py": MODEL_PY}))


def test_model_py_is_a_directory(tmp_path):
    refused(tmp_path, make_zip(tmp_path / "p.zip", {"model.py/": b"", "model.py/x": b"x"}))


def test_duplicate_members(tmp_path):
    path = tmp_path / "p.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.py", MODEL_PY)
        with pytest.warns(UserWarning):
            zf.writestr("model.py", b"import os; os.system('evil')")
    refused(tmp_path, path)


def test_not_an_archive(tmp_path):
    artifact = tmp_path / "p.zip"
    artifact.write_bytes(os.urandom(1000))
    refused(tmp_path, artifact)


def test_deeply_nested(tmp_path):
    name = "/".join(["d"] * 40) + "/x.py"
    refused(tmp_path, make_zip(tmp_path / "p.zip", {"model.py": MODEL_PY, name: b"x"}))
