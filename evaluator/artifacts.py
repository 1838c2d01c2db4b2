"""Site-side preparation of a downloaded vendor artifact.

This is trusted code and it NEVER loads, unpickles or imports the artifact: pickle,
joblib, ``torch.jit.load`` and ONNX loading all run vendor-controlled logic, so they
happen only inside the sandbox. Here we only hash, copy and unpack:

- single-file formats are copied under a fixed name (nothing vendor-chosen reaches a path);
- ``python_package`` archives (.zip, .tar, .tar.gz/.tgz, detected by content) are unpacked
  with caps on entry count, total uncompressed size and depth; absolute paths, ``..``,
  links, devices and FIFOs are refused; tar members go through ``filter="data"`` as a
  second line; zip members are written with ``O_EXCL | O_NOFOLLOW`` and counted while
  they are decompressed (a declared size is a claim, not a fact);
- the result is readable (not writable) by the sandbox user.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Final

MODEL_FILENAMES: Final = {
    "torchscript": "model.pt",
    "sklearn": "model.joblib",
    "onnx": "model.onnx",
}
PACKAGE_FORMAT: Final = "python_package"
MAX_ENTRIES: Final = 1000
MAX_TOTAL_BYTES: Final = 1024 * 1024 * 1024
MAX_DEPTH: Final = 16
MAX_NAME_BYTES: Final = 1024
_CHUNK: Final = 1024 * 1024


class ArtifactError(Exception):
    """Base of the artifact errors; ``reason`` is the coarse reason sent to the hub."""

    reason: str = "invalid_artifact"


class ArtifactMismatch(ArtifactError):
    reason = "artifact_mismatch"


class InvalidArtifact(ArtifactError):
    reason = "invalid_artifact"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise ``ArtifactMismatch`` unless the file's sha256 is ``expected`` (hex)."""
    expected = expected.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ArtifactMismatch("the expected sha256 is not 64 hex digits")
    if not hmac.compare_digest(sha256_file(path), expected):
        raise ArtifactMismatch("the artifact's sha256 does not match")


def safe_member_name(name: str, *, is_dir: bool = False) -> PurePosixPath | None:
    """The relative path an archive member may have, or ``InvalidArtifact``.
    ``None`` for the archive's own root folder (``./``), which is skipped."""
    if not name or "\x00" in name or "\\" in name or len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidArtifact(f"bad member name {name!r}")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InvalidArtifact(f"absolute member path {name!r}")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if not parts:
        if is_dir:
            return None
        raise InvalidArtifact(f"bad member name {name!r}")
    if ".." in parts:
        raise InvalidArtifact(f"member path escapes the archive: {name!r}")
    if len(parts) > MAX_DEPTH:
        raise InvalidArtifact(f"member path too deep: {name!r}")
    return PurePosixPath(*parts)


class _Budget:
    def __init__(self, max_entries: int, max_total_bytes: int) -> None:
        self.max_entries, self.max_total_bytes = max_entries, max_total_bytes
        self.entries = self.total = 0
        self.seen: set[PurePosixPath] = set()

    def entry(self, name: PurePosixPath) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise InvalidArtifact(f"the archive has more than {self.max_entries} entries")
        if name in self.seen:
            raise InvalidArtifact(f"duplicate member {name}")
        self.seen.add(name)

    def bytes(self, n: int) -> None:
        self.total += n
        if self.total > self.max_total_bytes:
            raise InvalidArtifact(f"the archive unpacks to more than {self.max_total_bytes} bytes")


def _write_new_file(target: Path, chunks: Iterator[bytes], budget: _Budget) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            budget.bytes(len(chunk))
            out.write(chunk)


def _zip_members(archive: zipfile.ZipFile, budget: _Budget) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The members to unpack with their checked paths, judged from the headers alone."""
    infos = archive.infolist()
    if len(infos) > budget.max_entries:
        raise InvalidArtifact(f"the archive has more than {budget.max_entries} entries")
    # Declared sizes bound what zipfile will inflate (it stops at file_size), so a bomb is
    # refused here; the actual bytes are counted again while unpacking.
    declared = sum(i.file_size for i in infos)
    if declared > budget.max_total_bytes:
        raise InvalidArtifact(f"the archive unpacks to more than {budget.max_total_bytes} bytes")
    members = []
    for info in infos:
        name = safe_member_name(info.filename, is_dir=info.is_dir())
        if name is None:
            continue
        budget.entry(name)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if info.is_dir():
            if kind not in (0, stat.S_IFDIR):
                raise InvalidArtifact(f"unsupported member type: {name}")
        elif kind not in (0, stat.S_IFREG):  # symlinks, devices, FIFOs
            raise InvalidArtifact(f"member is not a regular file: {name}")
        members.append((info, name))
    return members


def _tar_member(member: tarfile.TarInfo, budget: _Budget) -> PurePosixPath | None:
    """The checked path of one tar member (``None`` for the root folder), judged from its header."""
    name = safe_member_name(member.name, is_dir=member.isdir())
    if name is None:
        return None
    budget.entry(name)
    if not (member.isdir() or member.isreg()):  # symlinks, hard links, devices, FIFOs
        raise InvalidArtifact(f"member is not a regular file: {name}")
    if member.isreg():
        budget.bytes(member.size)
    return name


def archive_members(
    fileobj: IO[bytes], *, max_entries: int = MAX_ENTRIES, max_total_bytes: int = MAX_TOTAL_BYTES
) -> list[PurePosixPath]:
    """The member paths of a ``python_package`` archive, checked with the rules ``prepare_model``
    unpacks by, from the headers alone: nothing is written and no zip member is inflated (a tar.gz
    is decompressed as far as its headers, at most ``max_total_bytes``). The hub runs this at upload
    so that an archive a site would refuse is refused before it costs quota.
    Raises ``InvalidArtifact``; leaves ``fileobj`` at its start."""
    budget = _Budget(max_entries, max_total_bytes)
    try:
        fileobj.seek(0)
        if zipfile.is_zipfile(fileobj):
            fileobj.seek(0)
            with zipfile.ZipFile(fileobj) as archive:
                return [name for _info, name in _zip_members(archive, budget)]
        fileobj.seek(0)
        try:
            with tarfile.open(fileobj=fileobj, mode="r:*") as archive:
                names = []
                while (member := archive.next()) is not None:
                    if (name := _tar_member(member, budget)) is not None:
                        names.append(name)
                return names
        except tarfile.ReadError as exc:
            raise InvalidArtifact("a python_package must be a .zip, .tar or .tar.gz archive") from exc
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidArtifact("the archive cannot be read") from exc
    finally:
        fileobj.seek(0)


def _extract_zip(artifact: Path, dest: Path, budget: _Budget) -> None:
    try:
        archive = zipfile.ZipFile(artifact)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidArtifact("the zip archive cannot be read") from exc
    with archive:
        for info, name in _zip_members(archive, budget):
            if info.is_dir():
                (dest / name).mkdir(parents=True, exist_ok=True)
                continue
            try:
                with archive.open(info) as src:
                    _write_new_file(dest / name, iter(lambda: src.read(_CHUNK), b""), budget)
            except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError) as exc:
                raise InvalidArtifact(f"cannot unpack {name}") from exc


def _extract_tar(artifact: Path, dest: Path, budget: _Budget) -> None:
    try:
        archive = tarfile.open(artifact, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise InvalidArtifact("the tar archive cannot be read") from exc
    with archive:
        try:
            # Iterate lazily: a million headers are refused at entry max_entries + 1.
            while (member := archive.next()) is not None:
                name = _tar_member(member, budget)
                if name is None:
                    continue
                if member.isdir():
                    (dest / name).mkdir(parents=True, exist_ok=True)
                    continue
                member.name = str(name)
                archive.extract(member, dest, set_attrs=False, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InvalidArtifact("cannot unpack the tar archive") from exc


def _make_sandbox_readable(root: Path) -> None:
    # Readable by the sandbox user (uid 65534), writable by nobody but the agent.
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)  # noqa: S103
        for fname in filenames:
            path = Path(dirpath, fname)
            if not stat.S_ISREG(path.lstat().st_mode):
                raise InvalidArtifact(f"unexpected non-regular file {fname}")
            os.chmod(path, 0o644)


def _fresh_dir(dest: Path) -> None:
    if dest.is_symlink():
        raise ValueError(f"{dest} is a symlink")
    if dest.exists():
        if not dest.is_dir() or any(dest.iterdir()):
            raise ValueError(f"{dest} must be missing or an empty folder")
    else:
        dest.mkdir(parents=True, mode=0o755)
    os.chmod(dest, 0o755)  # noqa: S103 - the sandbox user must read it


def prepare_model(
    artifact: Path,
    *,
    model_format: str,
    dest: Path,
    max_entries: int = MAX_ENTRIES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
) -> Path:
    """Lay a verified artifact out for the sandbox's read-only ``/model`` mount.

    Returns the model file (single-file formats) or ``dest`` itself
    (``python_package``). ``dest`` must be missing or empty. Raises ``InvalidArtifact``.
    """
    st = artifact.lstat()
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArtifact("the artifact is not a regular file")
    if model_format in MODEL_FILENAMES:
        _fresh_dir(dest)
        target = dest / MODEL_FILENAMES[model_format]
        shutil.copyfile(artifact, target, follow_symlinks=False)
        os.chmod(target, 0o644)
        return target
    if model_format != PACKAGE_FORMAT:
        raise InvalidArtifact(f"unknown model format {model_format!r}")
    _fresh_dir(dest)
    budget = _Budget(max_entries, max_total_bytes)
    try:
        if zipfile.is_zipfile(artifact):
            _extract_zip(artifact, dest, budget)
        elif tarfile.is_tarfile(artifact):
            _extract_tar(artifact, dest, budget)
        else:
            raise InvalidArtifact("a python_package must be a .zip, .tar or .tar.gz archive")
    except OSError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise InvalidArtifact("cannot unpack the archive") from exc
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    try:
        model_py = dest / "model.py"
        if model_py.is_symlink() or not model_py.is_file():
            raise InvalidArtifact("model.py is missing from the package root")
        _make_sandbox_readable(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest
