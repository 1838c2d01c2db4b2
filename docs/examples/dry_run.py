"""Local dry run: load an artifact the way the sandbox runner does and check its output contract.

    python docs/examples/dry_run.py --format sklearn model.joblib
    python docs/examples/dry_run.py --format python_package model.zip

Predicts on the demo task's held-out rows (float32, (114, 30)), checks what the site agent checks
(shape, row count, finite, probabilities in [0, 1] whose rows sum to 1) and prints the accuracy,
the wall time and the peak memory against the demo task's limits (300 s, 1024 MB). It does NOT
sandbox anything: only dry-run artifacts you trust. A pickle (joblib) runs code when loaded.
"""

import argparse
import importlib.util
import resource
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
from _common import load_split  # the helper next to this script

MAX_ENTRIES = 1000  # the site's cap (evaluator/artifacts.py)


def check_member(name: str, is_regular: bool) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not is_regular:
        sys.exit(f"invalid_artifact: archive entry {name!r} (absolute, '..', link or special)")


def check_count(count: int) -> None:
    if count > MAX_ENTRIES:
        sys.exit(f"invalid_artifact: {count} entries, the cap is {MAX_ENTRIES}")


def unpack(archive: Path, into: Path) -> None:
    """Unpack a python_package archive after checking the platform's archive rules."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            infos = zipped.infolist()
            for info in infos:
                is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                check_member(info.filename, not is_link)
            check_count(len(infos))
            zipped.extractall(into)
    else:
        with tarfile.open(archive, "r:gz") as tarred:
            members = tarred.getmembers()
            for member in members:
                check_member(member.name, member.isfile() or member.isdir())
            check_count(len(members))
            tarred.extractall(into, filter="data")
    if not (into / "model.py").is_file():
        sys.exit("invalid_artifact: no model.py at the archive root")


def load_predictor(fmt: str, path: Path, workdir: Path):
    """Return predict(features) -> ndarray, using the runner's library calls for each format."""
    if fmt == "sklearn":
        import joblib

        estimator = joblib.load(path)
        return estimator.predict_proba
    if fmt == "torchscript":
        import torch

        module = torch.jit.load(str(path), map_location="cpu").eval()

        def predict(features):
            with torch.inference_mode():
                out = module(torch.from_numpy(features))
            return (out[0] if isinstance(out, (tuple, list)) else out).numpy()

        return predict
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        names = [output.name for output in session.get_outputs()]
        probabilities = [name for name in names if "prob" in name.lower()]
        output = probabilities[0] if probabilities else names[-1]  # skl2onnx: (label, probabilities)
        return lambda features: session.run([output], {input_name: features})[0]
    if fmt == "python_package":
        unpack(path, workdir)
        spec = importlib.util.spec_from_file_location("model", workdir / "model.py")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(workdir))  # model.py may import its sibling modules
        spec.loader.exec_module(module)
        model = module.load(str(workdir))
        return lambda features: module.predict(model, features)
    sys.exit(f"unknown format {fmt!r}")


def validate(predictions, n_rows: int) -> np.ndarray:
    """The binary-classification output contract; returns P(class 1) per row."""
    predictions = np.asarray(predictions, dtype=np.float32)
    if predictions.shape not in {(n_rows,), (n_rows, 1), (n_rows, 2)}:
        sys.exit(f"invalid_output: shape {predictions.shape}, expected ({n_rows}, 2)")
    if not np.isfinite(predictions).all():
        sys.exit("invalid_output: NaN or infinite values")
    if predictions.min() < 0 or predictions.max() > 1:
        sys.exit("invalid_output: probabilities outside [0, 1]")
    if predictions.ndim == 2 and predictions.shape[1] == 2:
        if not np.allclose(predictions.sum(axis=1), 1.0, atol=1e-3):
            sys.exit("invalid_output: class probabilities do not sum to 1 per row")
        return predictions[:, 1]
    return predictions.reshape(-1)


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("artifact", type=Path)
FORMATS = ["sklearn", "torchscript", "onnx", "python_package"]
parser.add_argument("--format", required=True, choices=FORMATS)
args = parser.parse_args()

_, _, X_test, y_test = load_split()
started = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    predict = load_predictor(args.format, args.artifact, Path(tmp))
    p1 = validate(predict(X_test), len(X_test))
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("status:   valid output")
print(f"accuracy: {((p1 >= 0.5) == y_test).mean():.4f} on {len(y_test)} held-out rows")
print(f"time:     {seconds:.2f} s to load and predict (limit 300 s)")
print(f"memory:   {peak_mb:.0f} MB peak, this process (limit 1024 MB)")
