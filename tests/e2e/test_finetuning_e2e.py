"""Federated fine-tuning end to end: live hub, three real agents, real sandboxes, MNIST-1D.

Three sites hold non-IID shards of MNIST-1D (by label groups) as test and train splits. A vendor
uploads a deliberately under-trained 1-D CNN (TorchScript), it is scored; the vendor asks for a
fine-tuning run with secure aggregation, the owner approves, the agents train a few rounds in
kept-alive sandboxes, and the fine-tuned entry (parent + offset) is evaluated like any
submission: its accuracy on the sites' test data is clearly better than the parent's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from evaluator.privacy.statistics import ReleaseSpec, check_statistics, metrics_from_statistics, pool
from tests.e2e.conftest import EXAMPLES, e2e_task, wait_for_run_completed, wait_for_submission

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

GROUPS = ([0, 1, 2, 3], [4, 5, 6], [7, 8, 9])
# 4 rounds fell short of the margin once in CI (0.300 -> 0.346, a site dropping out of rounds
# under load); 6 keep it clear.
ROUNDS = 6


SPEC = ReleaseSpec(task_type="multiclass_classification", metric_names=("accuracy",), n_classes=10)


def _accuracy(site_dirs, submission_id):
    """The pooled accuracy of what the sites released (noised statistics) for the submission."""
    released, rows = [], 0
    for site_dir in site_dirs:
        for entry in site_dir.ledger_entries():
            if entry.kind == "metrics" and entry.split == "public" and str(entry.submission_id) == str(submission_id):
                body = json.loads(entry.payload)
                released.append(check_statistics(SPEC, body["statistics"]))
                rows += body["n_rows"]
    assert rows, f"no statistics released for submission {submission_id}"
    return metrics_from_statistics(SPEC, pool(SPEC, released), rows)["accuracy"]


def test_finetuning_with_secure_aggregation_beats_the_parent(
    hub_vendor, owner, make_site_dir, agents, tmp_path, settings
):
    from mnist1d.data import get_dataset_args, make_dataset

    from evaluator.datasets import register_task_data
    from marketplace.finetuning.models import FineTuningRun
    from marketplace.finetuning.services import run_approve, run_request
    from marketplace.submissions.models import Submission

    data = make_dataset(get_dataset_args())
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64)
    x_test, y_test = data["x_test"].astype(np.float32), data["y_test"].astype(np.int64)

    parent_path = tmp_path / "mnist1d.pt"
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_mnist1d_torchscript.py"), str(parent_path)],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert "parent test accuracy" in out.stdout

    task = e2e_task(
        owner, title="MNIST-1D", task_type="multiclass_classification",
        input_spec={"n_features": 40, "dtype": "float32", "n_classes": 10},
        metrics=[{"name": "accuracy", "decimals": 4}], primary_metric="accuracy",
        fine_tuning_allowed=True, fl_secure_aggregation=True, fl_clip_norm=5.0, fl_noise_multiplier=0.0,
        fl_privacy_unit="none",  # the explicit opt-out: this test measures non-private accuracy
        release_delay_seconds=0,  # the vendor may fine-tune its parent as soon as it is scored
    )  # fmt: skip
    site_dirs = []
    for i, labels in enumerate(GROUPS):
        site_dir = make_site_dir(f"site-{i}")
        test_rows = np.isin(y_test, labels)
        incoming = site_dir.root / "incoming"
        incoming.mkdir(exist_ok=True)
        spec = {"n_features": 40, "n_classes": 10, "task_type": "multiclass_classification"}
        for split, (fx, fy) in {"test": (x_test[test_rows], y_test[test_rows]),
                                "train": (x[np.isin(y, labels)][:1200], y[np.isin(y, labels)][:1200])}.items():  # fmt: skip
            np.save(incoming / f"{split}-x.npy", fx)
            np.save(incoming / f"{split}-y.npy", fy)
            meta = register_task_data(
                data_dir=site_dir.data_dir, task_id=task.id, features_path=incoming / f"{split}-x.npy",
                labels_path=incoming / f"{split}-y.npy", input_spec=spec, split=split,
            )  # fmt: skip
            if split == "test":
                from evaluator.client import HubClient

                HubClient.from_config(site_dir.config()).register_shard(
                    task_id=task.id, row_count=meta["row_count"], fingerprint=meta["fingerprint"],
                    split_sizes=meta["split_sizes"],
                )  # fmt: skip
        site_dirs.append(site_dir)
    started = [agents(site_dir) for site_dir in site_dirs]
    for agent in started:
        agent.agent.run_poll_seconds = 0.1

    parent_id = hub_vendor.upload(task.id, parent_path, "torchscript", "mnist1d-cnn")
    parent = wait_for_submission(parent_id)
    assert parent.status == "scored", parent.status_reason
    parent_accuracy = _accuracy(site_dirs, parent_id)

    run = run_request(
        parent=parent, actor=hub_vendor.persona.user, rounds=ROUNDS, learning_rate=0.1, local_epochs=2,
        batch_size=32, round_timeout_seconds=120,
    )  # fmt: skip
    run_approve(run=run, actor=owner.user)
    wait_for_run_completed(run, timeout=200)
    tuned = Submission.objects.get(parent_id=parent_id, is_fine_tuned=True)
    tuned = wait_for_submission(tuned.id)
    assert tuned.status == "scored", tuned.status_reason
    tuned_accuracy = _accuracy(site_dirs, tuned.id)
    # Measured with 4 rounds: 0.29-0.33 -> 0.35-0.45 (the margin varies with timing-dependent dropouts).
    assert tuned_accuracy > parent_accuracy + 0.05, (parent_accuracy, tuned_accuracy)
    print(f"MNIST-1D over 3 non-IID sites, {ROUNDS} rounds with secure aggregation: parent {parent_accuracy:.4f} -> fine-tuned {tuned_accuracy:.4f}")

    for site_dir in site_dirs:  # every update left through the ledger, none unmasked
        updates = [e for e in site_dir.ledger_entries() if e.kind == "update"]
        assert len(updates) == ROUNDS
    assert FineTuningRun.objects.get(id=run.id).rounds_completed == ROUNDS
