"""Cheap plausibility checks of an uploaded artifact, done on the hub.

Security: nothing here loads, unpickles or imports the artifact — a pickle or a model file can
run code when loaded, so that only ever happens inside a site's sandbox. We look at magic bytes
and, for archives, at the member headers, with the sites' own unpacking rules
(`evaluator.artifacts.archive_members`: entry count, uncompressed size, depth, no links, no
absolute or `..` paths).
"""

import hashlib
import zipfile
from pathlib import PurePosixPath
from typing import IO

from evaluator.artifacts import MAX_ENTRIES as SITE_MAX_ENTRIES
from evaluator.artifacts import InvalidArtifact, archive_members
from marketplace.core.errors import DomainError

CHUNK = 1024 * 1024


class ImplausibleArtifact(DomainError):
    code = "implausible_format"


def sha256_of(stream: IO[bytes]) -> str:
    stream.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(CHUNK), b""):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


def _head(stream: IO[bytes], n: int = 16) -> bytes:
    stream.seek(0)
    head = stream.read(n)
    stream.seek(0)
    return head


def _check_torchscript(stream: IO[bytes], max_entries: int) -> None:
    if not zipfile.is_zipfile(stream):
        raise ImplausibleArtifact("A TorchScript artifact is a zip archive written by torch.jit.save.")
    with zipfile.ZipFile(stream) as archive:
        names = archive.namelist()
    if len(names) > max_entries or not any(n.endswith("data.pkl") for n in names):
        raise ImplausibleArtifact("This zip does not look like a TorchScript file (no data.pkl).")
    if not any("/code/" in n for n in names):
        raise ImplausibleArtifact("This looks like a plain torch.save file; submit torch.jit.save output.")


def _check_sklearn(stream: IO[bytes], max_entries: int) -> None:
    head = _head(stream, 2)
    # joblib.dump writes a pickle (protocol 2+) unless compression was asked for.
    if len(head) < 2 or head[0] != 0x80 or head[1] not in range(2, 6):
        raise ImplausibleArtifact(
            "A scikit-learn artifact is an uncompressed joblib.dump file (a pickle, protocol 2-5)."
        )


def _check_onnx(stream: IO[bytes], max_entries: int) -> None:
    head = _head(stream, 2)
    # An ONNX ModelProto starts with field 1 (ir_version, varint): tag byte 0x08.
    if len(head) < 2 or head[0] != 0x08:
        raise ImplausibleArtifact("This does not look like an ONNX model (protobuf ModelProto).")


def _check_python_package(stream: IO[bytes], max_entries: int) -> None:
    # The sites' own unpacking rules, so that what a site would refuse never costs quota.
    try:
        names = archive_members(stream, max_entries=min(max_entries, SITE_MAX_ENTRIES))
    except InvalidArtifact as exc:
        raise ImplausibleArtifact(f"The archive is refused: {exc}.") from exc
    if PurePosixPath("model.py") not in names:
        raise ImplausibleArtifact("A Python model package needs model.py at the archive root.")


CHECKS = {
    "torchscript": _check_torchscript,
    "sklearn": _check_sklearn,
    "onnx": _check_onnx,
    "python_package": _check_python_package,
}


def artifact_check_format(stream: IO[bytes], *, artifact_format: str, max_entries: int) -> None:
    check = CHECKS.get(artifact_format)
    if check is None:
        raise DomainError(f"Unknown artifact format {artifact_format!r}.", code="unknown_format")
    try:
        check(stream, max_entries)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ImplausibleArtifact(f"The file is not a readable {artifact_format} artifact.") from exc
    finally:
        stream.seek(0)
