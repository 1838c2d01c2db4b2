"""A vendor's dry run: the task's public sample through the same image, runner, sandbox profile
and output checks as a real evaluation — on the vendor's own machine, with no hub involved.

The sample is public, so nothing here is a release: exact metrics and the model's own logs are
shown (a site shows a vendor neither: its failures leave only as a fallback score).

    python -m evaluator dry-run --format sklearn --model model.joblib --sample sample.csv \
        --task-type binary_classification --n-classes 2 [--labels labels.csv] [--memory-mb 1024 ...]
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluator import datasets, metrics
from evaluator.artifacts import prepare_model
from evaluator.outputs import load_predictions
from evaluator.sandbox import Limits, run_prediction

MiB = 1024 * 1024


@dataclass(frozen=True)
class DryRunReport:
    n_rows: int
    prediction_shape: tuple[int, ...]
    sandbox_seconds: float
    metrics: dict[str, float]
    logs: str = ""


def dry_run(
    *,
    image: str,
    model_path: Path,
    model_format: str,
    sample_path: Path,
    task_type: str,
    n_classes: int | None,
    limits: Limits,
    labels_path: Path | None = None,
) -> DryRunReport:
    """Raises the same errors (with the same coarse reasons) a site would report."""
    features = datasets.read_table(sample_path).astype(np.float32)
    if features.ndim != 2 or not np.all(np.isfinite(features)):
        raise datasets.InvalidData("the sample must be a finite 2-D table of features")
    work = Path(tempfile.mkdtemp(prefix="dry-run-"))
    try:
        (work / "data").mkdir()
        features_path = work / "data" / "features.npy"
        np.save(features_path, features)
        features_path.chmod(0o644)
        model = prepare_model(model_path, model_format=model_format, dest=work / "model")
        run = run_prediction(
            image=image, model_path=Path(model), model_format=model_format,
            features_path=features_path, work_dir=work, limits=limits,
        )  # fmt: skip
        predictions = load_predictions(
            Path(run.predictions_path).parent, n_rows=len(features), task_type=task_type,
            n_classes=n_classes, max_bytes=limits.max_output_mb * MiB,
        )  # fmt: skip
        scores: dict[str, float] = {}
        if labels_path is not None:
            labels = datasets.read_table(labels_path).reshape(-1)
            names = [m.name for m in metrics.REGISTRY.values() if task_type in m.task_types]
            scores = metrics.compute_metrics(task_type, names, labels, predictions, n_classes=n_classes)
        return DryRunReport(len(features), tuple(predictions.shape), run.duration_seconds, scores, run.logs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
