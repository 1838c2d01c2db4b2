"""What a vendor needs to start on a task: the exact dry-run command per format, the starter
kit (examples + the task's public sample + the command), the fine-tuning policy in words."""

import io
import json
import zipfile
from pathlib import Path

from django.conf import settings

EXAMPLES = Path(settings.BASE_DIR) / "docs" / "examples"
CONTRACT = Path(settings.BASE_DIR) / "docs" / "model-contract.md"

FORMATS = {
    "sklearn": {"label": "scikit-learn (joblib)", "script": "make_sklearn_model.py", "artifact": "model.joblib"},
    "torchscript": {"label": "TorchScript", "script": "make_torchscript_model.py", "artifact": "model.pt"},
    "onnx": {"label": "ONNX", "script": "make_onnx_model.py", "artifact": "model.onnx"},
    "python_package": {"label": "Python model package", "script": "make_python_package.py", "artifact": "model.zip"},
}


def sample_name(task) -> str | None:
    if not task.sample_file:
        return None
    suffix = "".join(Path(task.sample_file.name).suffixes[-1:]) or ".npy"
    return f"sample{suffix if suffix in ('.npy', '.csv', '.parquet') else '.npy'}"


def dry_run_command(task, fmt: str) -> str:
    """The dry run that reproduces the site's sandbox on the public sample, with the task's limits."""
    limits = task.resource_limits or {}
    parts = [
        "python -m evaluator dry-run", f"--format {fmt}", f"--model {FORMATS[fmt]['artifact']}",
        f"--sample {sample_name(task) or '<your-sample.npy>'}", f"--task-type {task.task_type}",
    ]  # fmt: skip
    if task.input_spec.get("n_classes"):
        parts.append(f"--n-classes {task.input_spec['n_classes']}")
    for flag, key in (("--memory-mb", "memory_mb"), ("--cpus", "cpus"), ("--timeout-seconds", "timeout_seconds"),
                      ("--max-output-mb", "max_output_mb")):  # fmt: skip
        if limits.get(key) is not None:
            parts.append(f"{flag} {limits[key]:g}" if isinstance(limits[key], float) else f"{flag} {limits[key]}")
    return " ".join(parts)


def per_format(task) -> list[dict]:
    return [
        {"format": fmt, **info, "build": f"python examples/{info['script']} {info['artifact']}",
         "dry_run": dry_run_command(task, fmt)}
        for fmt, info in FORMATS.items()
    ]  # fmt: skip


def fine_tuning_policy(task) -> dict:
    """The task's fine-tuning fields as the model holds them (H1 owns their meaning), for display."""
    fields = ("fl_privacy_unit", "fl_noise_multiplier", "fl_clip_norm", "fl_example_clip_norm", "fl_dp_delta",
              "fl_epsilon_cap", "fl_secure_aggregation", "fl_robust_rule")  # fmt: skip
    return {"allowed": task.fine_tuning_allowed, **{f: getattr(task, f) for f in fields if hasattr(task, f)}}


def _readme(task) -> str:
    lines = [
        f"# Starter kit: {task.title}", "",
        f"Task {task.id} ({task.task_type}): {task.input_spec.get('n_features')} features "
        f"({task.input_spec.get('dtype', 'float32')})"
        + (f", {task.input_spec['n_classes']} classes" if task.input_spec.get("n_classes") else "") + ".",
        f"Metrics: {', '.join(m['name'] for m in task.metrics)} (primary: {task.primary_metric}).", "",
        "The model contract (what the model receives and must return): model-contract.md.",
        "The example scripts train a baseline on a demo data set (30 features); change the data loading",
        "to your own training data with this task's features before you upload.", "",
        "## Build and dry-run, per format", "",
    ]  # fmt: skip
    for row in per_format(task):
        lines += [f"### {row['label']} (`{row['format']}`)", "", "```", row["build"], row["dry_run"], "```", ""]
    lines += [
        "The dry run runs the model in the same locked-down container as a site, on the task's public",
        "sample" + ("" if task.sample_file else " (this task has none yet: use any features of the right shape)")
        + ", and prints the model's own output and the exact contract violation if any.", "",
    ]  # fmt: skip
    if task.rules.strip():
        lines += ["## The task's rules (accept them on the task page before your first upload)", "", task.rules, ""]
    return "\n".join(lines)


def starter_kit_zip(task) -> bytes:
    """examples/ (one script per format and what they share), model-contract.md, README.md with the
    exact commands, task.json, and the task's public sample if it has one."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as kit:
        kit.writestr("README.md", _readme(task))
        kit.write(CONTRACT, "model-contract.md")
        for name in ["_common.py", "README.md", *(info["script"] for info in FORMATS.values())]:
            kit.write(EXAMPLES / name, f"examples/{name}")
        kit.write(EXAMPLES / "python_package" / "model.py", "examples/python_package/model.py")
        spec = {"id": task.id, "title": task.title, "task_type": task.task_type, "input_spec": task.input_spec,
                "metrics": task.metric_specs, "primary_metric": task.primary_metric,
                "resource_limits": task.resource_limits}  # fmt: skip
        kit.writestr("task.json", json.dumps(spec, indent=2))
        if task.sample_file:
            with task.sample_file.open("rb") as sample:
                kit.writestr(sample_name(task), sample.read())
    return buffer.getvalue()
