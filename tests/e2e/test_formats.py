"""Every submission format, end to end: vendor upload over HTTP → hub checks → one job per site →
three real agents claim over HTTP → real sandboxes → noised statistics → ledgers → pooled
leaderboard."""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from evaluator.privacy.mechanism import noise_scales
from evaluator.privacy.statistics import (
    PLAUSIBLE_STDS,
    ReleaseSpec,
    check_statistics,
    metrics_from_statistics,
    pool,
    sufficient_statistics,
)
from evaluator.privacy.zcdp import rho_for_epsilon
from tests.e2e.conftest import e2e_task, wait_for_submission

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SITES = ("north", "central", "south")
DECIMALS = {"roc_auc": 4, "accuracy": 3}  # tests.conftest.TASK_SPEC


def trusted_predict(fmt: str, artifact: Path, features: np.ndarray, tmp_path: Path) -> np.ndarray:
    """Class probabilities from our OWN example artifact, in-process (never do this with a
    vendor's artifact: that is what the sandbox is for)."""
    if fmt == "sklearn":
        import joblib

        return joblib.load(artifact).predict_proba(features)
    if fmt == "torchscript":
        import torch

        module = torch.jit.load(str(artifact), map_location="cpu").eval()
        with torch.inference_mode():
            return module(torch.from_numpy(features)).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
        probabilities = [o.name for o in session.get_outputs() if "prob" in o.name.lower()]
        return session.run(probabilities, {session.get_inputs()[0].name: features})[0]
    if fmt == "python_package":
        folder = tmp_path / "trusted-package"
        with zipfile.ZipFile(artifact) as zf:
            zf.extractall(folder)
        spec = importlib.util.spec_from_file_location("trusted_example_model", folder / "model.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules.pop("trusted_example_model", None)
        spec.loader.exec_module(module)
        return module.predict(module.load(str(folder)), features)
    raise AssertionError(fmt)


SPEC = ReleaseSpec.for_task(task_type="binary_classification", metric_names=DECIMALS, input_spec={"n_classes": 2})


def hand_statistics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    return sufficient_statistics(SPEC, labels, probabilities)


@pytest.mark.parametrize("fmt", ["sklearn", "torchscript", "onnx", "python_package"])
def test_every_format_is_scored_across_three_sites_from_the_noised_statistics_they_released(
    fmt, owner, hub_vendor, make_site_dir, agents, example_artifacts, test_split, tmp_path
):
    from marketplace.jobs.models import Job, JobStatus, Result
    from marketplace.leaderboard.models import LeaderboardEntry

    features, labels = test_split
    task = e2e_task(owner, release_delay_seconds=0)
    shards = np.array_split(np.arange(len(labels)), len(SITES))
    sites = {}
    for name, rows in zip(SITES, shards, strict=True):
        site_dir = make_site_dir(name)
        site_dir.register(task.id, features[rows], labels[rows])
        sites[name] = (site_dir, rows)
        agents(site_dir)

    artifact = example_artifacts[fmt]
    submission_id = hub_vendor.upload(task.id, artifact, fmt, name=f"example {fmt}")
    submission = wait_for_submission(submission_id)
    assert (submission.status, submission.status_reason) == ("scored", "")

    # Each site released the noised statistics of what the model predicted on its rows: within
    # the mechanism's noise of a trusted, in-process computation, and not equal to it.
    released, total = [], 0
    noise = noise_scales(SPEC, rho_for_epsilon(task.dp_epsilon_per_release, task.dp_delta))
    for site_dir, rows in sites.values():
        [entry] = [e for e in site_dir.ledger_entries() if str(e.submission_id) == str(submission_id)]
        body = json.loads(entry.payload)
        statistics = check_statistics(SPEC, body["statistics"])
        exact = hand_statistics(trusted_predict(fmt, artifact, features[rows], tmp_path), labels[rows])
        for block in SPEC.blocks:
            assert np.all(np.abs(statistics[block] - exact[block]) <= PLAUSIBLE_STDS * noise[block] + 1e-6)
        assert any(not np.allclose(statistics[b], exact[b]) for b in SPEC.blocks)
        released.append(statistics)
        total += body["n_rows"]
    # The hub pools them: the leaderboard is the metrics of the sum, shown to the task's decimals.
    expected = metrics_from_statistics(SPEC, pool(SPEC, released), total)
    (entry,) = LeaderboardEntry.objects.filter(submission_id=submission_id)
    assert entry.metrics == pytest.approx(expected, abs=1e-9)
    board = hub_vendor.get(f"/api/v1/tasks/{task.id}/leaderboard").json()
    (row,) = board["results"]
    assert row["submission_id"] == submission_id
    assert row["metrics"] == {name: round(value, DECIMALS[name]) for name, value in expected.items()}
    assert row["n_rows"] == entry.n_rows == total == len(labels)
    assert row["n_sites"] == 3

    # Each site's ledger: exactly one entry per job, with the hash and cost the hub stored.
    for site_dir, rows in sites.values():
        job = Job.objects.get(submission_id=submission_id, site=site_dir.site)
        assert job.status == JobStatus.SUCCEEDED and job.attempts == 1
        result = Result.objects.get(job=job)
        assert result.n_rows == len(rows)
        entries = [e for e in site_dir.ledger_entries() if str(e.job_id) == str(job.id)]
        assert len(entries) == 1
        assert entries[0].sha256 == result.ledger_sha256
        assert entries[0].bytes == result.ledger_bytes
        assert (entries[0].epsilon, entries[0].delta) == (task.dp_epsilon_per_release, task.dp_delta)
        assert len(site_dir.ledger_entries()) == 1  # nothing else left this site
