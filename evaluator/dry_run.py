"""A vendor's dry run: the task's public sample through the same image, runner, sandbox profile
and output checks as a real evaluation — on the vendor's own machine, with no hub involved.

The sample is public and the model is the author's own, so nothing here is a release: exact
metrics, the model's own stdout/stderr and the exact contract violation are shown (a site shows
a vendor none of them: its failures leave only as a fallback score, docs/disclosure.md).

    python -m evaluator dry-run --format sklearn --model model.joblib --sample sample.csv \
        --task-type binary_classification --n-classes 2 [--labels labels.csv] [--memory-mb 1024 ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from evaluator import datasets, metrics
from evaluator.artifacts import prepare_model
from evaluator.outputs import load_predictions
from evaluator.sandbox import Limits, run_prediction

MiB = 1024 * 1024
RUNNER_PREFIX = "runner: "


@dataclass(frozen=True)
class DryRunReport:
    n_rows: int
    prediction_shape: tuple[int, ...]
    sandbox_seconds: float
    metrics: dict[str, float | None]
    logs: str = ""
    # metric name -> why it has no value on this sample (e.g. a class missing from 20 rows)
    undefined: dict[str, str] = field(default_factory=dict)


def runner_message(logs: str) -> str:
    """The runner's own account of a failure: its last ``runner: ...`` line on stderr."""
    lines = [line[len(RUNNER_PREFIX) :] for line in logs.splitlines() if line.startswith(RUNNER_PREFIX)]
    return lines[-1].strip() if lines else ""


def sample_metrics(
    task_type: str, labels: np.ndarray, predictions: np.ndarray, *, n_classes: int | None
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Every metric of the task type, each on its own: one undefined on a small sample (ROC AUC
    without every class present) is reported as such and the others still computed."""
    values: dict[str, float | None] = {}
    undefined: dict[str, str] = {}
    hint = ""
    if task_type != "regression":
        k = 2 if task_type == "binary_classification" else int(n_classes or 0)
        present = sorted({int(v) for v in labels})
        if len(present) < k:
            hint = f" (the sample's labels hold classes {present} of 0..{k - 1})"
    for metric in metrics.REGISTRY.values():
        if task_type not in metric.task_types:
            continue
        try:
            with warnings.catch_warnings():  # sklearn warns, then returns NaN: reported below
                warnings.simplefilter("ignore")
                values.update(
                    metrics.compute_metrics(task_type, [metric.name], labels, predictions, n_classes=n_classes)
                )
        except metrics.InvalidPredictions:
            raise
        except ValueError as exc:
            values[metric.name] = None
            undefined[metric.name] = f"{exc}{hint}"
    return values, undefined


def _read_labels(path: Path, n_rows: int, task_type: str, n_classes: int | None) -> np.ndarray:
    labels = datasets.read_table(path)
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise datasets.InvalidData(f"the labels file must have one column, it has {labels.shape[1]}")
    labels = labels.reshape(-1)
    if labels.shape[0] != n_rows:
        raise datasets.InvalidData(f"the labels file has {labels.shape[0]} rows, the sample {n_rows}")
    if not np.all(np.isfinite(labels)):
        raise datasets.InvalidData("the labels must be finite numbers")
    if task_type != "regression":
        k = 2 if task_type == "binary_classification" else (n_classes or 0)
        if np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() >= k:
            raise datasets.InvalidData(f"classification labels must be integers in [0, {k - 1}]")
    return labels


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
    """Raises the same errors (with the same reasons) a site would record for its owner."""
    features = datasets.read_table(sample_path).astype(np.float32)
    if features.ndim != 2 or not np.all(np.isfinite(features)):
        raise datasets.InvalidData("the sample must be a finite 2-D table of features")
    labels = None if labels_path is None else _read_labels(labels_path, len(features), task_type, n_classes)
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
        try:
            predictions = load_predictions(
                Path(run.predictions_path).parent, n_rows=len(features), task_type=task_type,
                n_classes=n_classes, max_bytes=limits.max_output_mb * MiB,
            )  # fmt: skip
        except Exception as exc:
            exc.logs = run.logs  # type: ignore[attr-defined]  # the author sees its model's output
            raise
        scores: dict[str, float | None] = {}
        undefined: dict[str, str] = {}
        if labels is not None:
            scores, undefined = sample_metrics(task_type, labels, predictions, n_classes=n_classes)
        return DryRunReport(
            len(features), tuple(predictions.shape), run.duration_seconds, scores, run.logs, undefined
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _print_log(logs: str, err: TextIO) -> None:
    if logs.strip():
        print(f"--- the model's stdout/stderr (from the sandbox) ---\n{logs.rstrip()}\n--- end ---", file=err)
    else:
        print("(the model printed nothing)", file=err)


def cli(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``python -m evaluator dry-run``: 0 when the model passes, 1 with the reason when it fails."""
    out, err = out or sys.stdout, err or sys.stderr
    n_classes = 2 if args.task_type == "binary_classification" else args.n_classes
    if args.task_type == "multiclass_classification" and (n_classes is None or n_classes < 2):
        print("usage error: a multiclass task needs --n-classes K (K >= 2)", file=err)
        return 2
    if args.image:
        image = args.image
    else:
        from sandbox_images.build import ensure_runner_image

        image = ensure_runner_image()
    try:
        report = dry_run(
            image=image, model_path=Path(args.model), model_format=args.format, sample_path=Path(args.sample),
            task_type=args.task_type, n_classes=n_classes,
            labels_path=Path(args.labels) if args.labels else None,
            limits=Limits(memory_mb=args.memory_mb, cpus=args.cpus, timeout_seconds=args.timeout_seconds,
                          max_output_mb=args.max_output_mb),
        )  # fmt: skip
    except datasets.DatasetError as exc:  # the author's own files, before any sandbox
        print(f"bad sample or labels: {exc}", file=err)
        return 2
    except Exception as exc:
        reason = getattr(exc, "reason", "internal_error")
        logs = str(getattr(exc, "logs", "") or "")
        detail = runner_message(logs) or str(exc)
        print(f"{reason}: {detail}", file=err)
        exit_code = getattr(exc, "exit_code", None)
        if exit_code not in (None, 0):
            print(f"(the runner exited with {exit_code})", file=err)
        if hasattr(exc, "logs"):
            _print_log(logs, err)
        return 1
    _print_log(report.logs, err)
    for why in report.undefined.values():
        print(f"note: {why}; the other metrics stand", file=err)
    print(json.dumps({"rows": report.n_rows, "prediction_shape": list(report.prediction_shape),
                      "sandbox_seconds": round(report.sandbox_seconds, 2), "metrics": report.metrics,
                      "undefined_metrics": report.undefined}), file=out)  # fmt: skip
    return 0
