"""A vendor's dry run on a task's public sample: same image, runner, profile and output checks."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

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
