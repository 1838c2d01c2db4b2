"""The vendor examples in docs/examples/ build artifacts that meet the model contract.

Each script runs as a vendor would run it (a subprocess, output into tmp_path); the artifact is
then loaded in this process with the library calls the sandbox runner uses. That is safe only
because these are our own examples: vendor artifacts are only ever loaded inside the sandbox.
"""

import hashlib
import importlib.util
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
]

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def _import_from(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_common = _import_from(EXAMPLES / "_common.py", "vendor_examples_common")


def build(script: str, out: Path, *extra: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=out.parent,
    )
    assert result.returncode == 0, result.stderr
    assert out.is_file()
    return result.stdout


def predict_sklearn(path: Path, workdir: Path):
    import joblib

    return joblib.load(path).predict_proba


def predict_torchscript(path: Path, workdir: Path):
    import torch

    module = torch.jit.load(str(path), map_location="cpu").eval()

    def predict(features):
        with torch.inference_mode():
            return module(torch.from_numpy(features)).numpy()

    return predict


def predict_onnx(path: Path, workdir: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.type == "tensor(float)"
    assert graph_input.shape[1] == 30 and not isinstance(graph_input.shape[0], int)
    assert "probabilities" in [output.name for output in session.get_outputs()]
    return lambda features: session.run(["probabilities"], {graph_input.name: features})[0]


def predict_python_package(path: Path, workdir: Path):
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            archive.extractall(workdir)
    else:
        with tarfile.open(path, "r:gz") as archive:
            assert all(member.isfile() for member in archive.getmembers())
            names = archive.getnames()
            archive.extractall(workdir, filter="data")
    assert sorted(names) == ["model.py", "weights.safetensors"]  # at the root, nothing else
    module = _import_from(workdir / "model.py", f"vendor_example_model_{path.name.split('.')[-1]}")
    model = module.load(str(workdir))
    return lambda features: module.predict(model, features)


CASES = [
    ("make_sklearn_model.py", "model.joblib", predict_sklearn),
    ("make_torchscript_model.py", "model.pt", predict_torchscript),
    ("make_onnx_model.py", "model.onnx", predict_onnx),
    ("make_python_package.py", "model.zip", predict_python_package),
    ("make_python_package.py", "model.tar.gz", predict_python_package),
]


@pytest.mark.parametrize(("script", "filename", "loader"), CASES, ids=[c[1] for c in CASES])
def test_example_artifact_meets_the_output_contract(tmp_path, script, filename, loader):
    out = tmp_path / filename
    stdout = build(script, out, "--seed", "0")
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"sha256:   {digest}" in stdout
    assert f"size:     {out.stat().st_size} bytes" in stdout

    _, _, X_test, y_test = _common.load_split()
    assert X_test.dtype == np.float32 and X_test.shape == (114, 30)
    workdir = tmp_path / "unpacked"
    workdir.mkdir()
    predictions = np.asarray(loader(out, workdir)(X_test))

    assert predictions.shape == (len(X_test), 2)
    assert np.issubdtype(predictions.dtype, np.floating)
    assert np.isfinite(predictions).all()
    assert ((predictions >= 0) & (predictions <= 1)).all()
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-4)
    accuracy = (predictions.argmax(axis=1) == y_test).mean()
    assert accuracy > 0.9


def test_same_seed_gives_the_same_artifact(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "model.tar.gz", tmp_path / "b" / "model.tar.gz"
    build("make_python_package.py", first, "--seed", "3")
    build("make_python_package.py", second, "--seed", "3")
    assert first.read_bytes() == second.read_bytes()


def test_split_is_fixed_and_disjoint():
    X_train, y_train, X_test, y_test = _common.load_split()
    assert len(X_train) + len(X_test) == 569
    train_rows = {row.tobytes() for row in X_train}
    assert not any(row.tobytes() in train_rows for row in X_test)
    np.testing.assert_array_equal(_common.load_split()[3], y_test)


def test_dry_run_accepts_an_example_artifact(tmp_path):
    out = tmp_path / "model.joblib"
    build("make_sklearn_model.py", out)
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "dry_run.py"), "--format", "sklearn", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "valid output" in result.stdout


def test_dry_run_rejects_an_archive_that_escapes_its_folder(tmp_path):
    out = tmp_path / "evil.zip"
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("model.py", "def load(d): ...\n")
        archive.writestr("../escape.py", "x = 1\n")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "dry_run.py"), "--format", "python_package", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "invalid_artifact" in result.stderr
    assert not (tmp_path / "escape.py").exists()
