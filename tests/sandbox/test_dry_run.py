"""A vendor's dry run on a task's public sample: same image, runner, profile and output checks."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluator.__main__ import main

pytestmark = pytest.mark.docker
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
sys.path.insert(0, str(EXAMPLES))
from _common import load_split  # noqa: E402


@pytest.fixture
def sample(tmp_path):
    _, _, features, labels = load_split()
    pd.DataFrame(features[:60], columns=[f"f{i}" for i in range(30)]).to_csv(tmp_path / "sample.csv", index=False)
    pd.DataFrame({"label": labels[:60]}).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "sample.csv", tmp_path / "labels.csv"


def _dry_run(runner_image, fmt, model, sample, *extra):
    return main(["dry-run", "--format", fmt, "--model", str(model), "--sample", str(sample),
                 "--task-type", "binary_classification", "--image", runner_image, *extra])  # fmt: skip


def test_a_good_model_passes_the_dry_run_with_metrics(tmp_path, runner_image, sample, capsys):
    model = tmp_path / "model.joblib"
    subprocess.run([sys.executable, str(EXAMPLES / "make_sklearn_model.py"), str(model)], check=True, capture_output=True)
    features, labels = sample
    assert _dry_run(runner_image, "sklearn", model, features, "--labels", str(labels)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 60 and report["prediction_shape"] == [60, 2]
    assert report["metrics"]["accuracy"] > 0.9


def test_a_model_that_writes_nans_fails_the_dry_run_like_at_a_site(tmp_path, runner_image, sample, capsys):
    package = tmp_path / "nan.zip"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr(
            "model.py",
            "import numpy as np\n"
            "def load(model_dir):\n    return None\n"
            "def predict(model, features):\n    return np.full((len(features), 2), np.nan)\n",
        )
    assert _dry_run(runner_image, "python_package", package, sample[0]) == 1
    assert capsys.readouterr().err.startswith("invalid_output")


def _package(path, source):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.py", source)
    return path


@pytest.fixture
def multiclass_sample(tmp_path):
    """20 rows of a 3-class task whose labels hold classes 0 and 1 only (ROC AUC undefined)."""
    rng = np.random.default_rng(7)
    pd.DataFrame(rng.normal(size=(20, 4)), columns=[f"f{i}" for i in range(4)]).to_csv(tmp_path / "mc.csv", index=False)
    pd.DataFrame({"label": [0, 1] * 10}).to_csv(tmp_path / "mc-labels.csv", index=False)
    return tmp_path / "mc.csv", tmp_path / "mc-labels.csv"


def _multiclass(runner_image, fmt, model, sample, *extra):
    return main(["dry-run", "--format", fmt, "--model", str(model), "--sample", str(sample),
                 "--task-type", "multiclass_classification", "--n-classes", "3", "--image", runner_image, *extra])  # fmt: skip


UNIFORM = "import numpy as np\ndef load(model_dir):\n    return None\n"


def test_a_crashing_model_shows_its_author_its_own_stdout_stderr_and_the_reason(tmp_path, runner_image, sample, capsys):
    model = _package(
        tmp_path / "crash.zip",
        "import sys\nprint('model says hello on stdout')\nprint('model warns on stderr', file=sys.stderr)\n"
        "def load(model_dir):\n    raise RuntimeError('weights.bin not found')\n"
        "def predict(model, features):\n    return features\n",
    )
    assert _dry_run(runner_image, "python_package", model, sample[0]) == 1
    err = capsys.readouterr().err
    headline = err.splitlines()[0]
    assert headline == "crashed: cannot load model: the model's code raised RuntimeError: weights.bin not found"
    assert "model says hello on stdout" in err and "model warns on stderr" in err
    assert "(the runner exited with 4)" in err


def test_a_model_returning_one_row_too_few_is_invalid_output_with_the_contract_named(
    tmp_path, runner_image, multiclass_sample, capsys
):
    model = _package(
        tmp_path / "short.zip", UNIFORM + "def predict(model, features):\n    return np.full((len(features) - 1, 3), 1 / 3)\n"
    )
    assert _multiclass(runner_image, "python_package", model, multiclass_sample[0]) == 1
    headline = capsys.readouterr().err.splitlines()[0]
    assert headline == (
        "invalid_output: a batch of 20 rows gave 19 rows (shape (19, 3)); the contract: one prediction per input row"
    )


@pytest.mark.parametrize(
    "fmt,suffix,content,expected",
    [
        ("onnx", ".onnx", b"this is not a protobuf" * 20, "invalid_artifact: not an ONNX model onnxruntime can load"),
        ("sklearn", ".joblib", b"\x80\x04garbage pickle" * 20, "invalid_artifact: not a joblib/pickle file"),
    ],
)
def test_garbage_onnx_or_pickle_is_an_invalid_artifact_not_a_crash(
    tmp_path, runner_image, sample, capsys, fmt, suffix, content, expected
):
    model = tmp_path / f"garbage{suffix}"
    model.write_bytes(content)
    assert _dry_run(runner_image, fmt, model, sample[0]) == 1
    headline = capsys.readouterr().err.splitlines()[0]
    assert headline.startswith(expected)
    assert len(headline) < 600  # a pickle's error quotes its bytes: capped


def test_a_small_multiclass_sample_missing_a_class_reports_that_metric_undefined_and_keeps_the_others(
    tmp_path, runner_image, multiclass_sample, capsys
):
    model = _package(tmp_path / "uniform.zip", UNIFORM + "def predict(model, features):\n    return np.full((len(features), 3), 1 / 3)\n")
    features, labels = multiclass_sample
    assert _multiclass(runner_image, "python_package", model, features, "--labels", str(labels)) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["metrics"]["roc_auc"] is None
    assert report["metrics"]["accuracy"] == pytest.approx(0.5)
    assert report["metrics"]["log_loss"] == pytest.approx(np.log(3))
    assert "classes [0, 1] of 0..2" in report["undefined_metrics"]["roc_auc"]
    assert "the other metrics stand" in captured.err


def test_a_labels_file_of_the_wrong_length_is_refused_before_any_sandbox(tmp_path, multiclass_sample, capsys):
    features, _ = multiclass_sample
    labels = tmp_path / "short-labels.csv"
    pd.DataFrame({"label": [0, 1, 2]}).to_csv(labels, index=False)
    model = _package(tmp_path / "never-run.zip", "raise SystemExit('must not run')\n")
    code = _multiclass("vaultbench-runner:not-needed", "python_package", model, features, "--labels", str(labels))
    assert code == 2
    assert capsys.readouterr().err.strip() == "bad sample or labels: the labels file has 3 rows, the sample 20"
