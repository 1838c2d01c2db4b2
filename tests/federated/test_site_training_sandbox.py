"""The kept-alive training sandbox against the real engine and the real runner image.

One container serves two rounds of a tiny TorchScript classifier under the hardened profile:
the loss goes down, no network, read-only root, nothing but the train rows mounted; the
container is gone after ``close()``; a fine-tuned offset applied by ``predict`` gives the same
model as ``w0 + D``. Each runs with a cold session and with a pre-started (pooled) one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from evaluator import sandbox
from evaluator.outputs import load_predictions
from evaluator.sandbox import Limits
from evaluator.training_sandbox import TrainingSession
from tests.federated.training_pools import check_kind, prestart, training_pool  # noqa: F401
from tests.sandbox.conftest import docker_client, runner_image  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LIMITS = Limits(memory_mb=1024, cpus=1.0, timeout_seconds=120, max_output_mb=16)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(x), dim=1)


@pytest.fixture
def training_inputs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = np.argmax(x[:, :3] * 3 + rng.normal(scale=0.1, size=(300, 3)), axis=1).astype(np.int64)
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    paths = {}
    for name, arr in (("train-features", x[:240]), ("train-labels", y[:240]), ("val-features", x[240:])):
        paths[name] = work / f"{name}.npy"
        np.save(paths[name], arr)
        paths[name].chmod(0o644)
    torch.manual_seed(0)
    model_path = work / "model.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(model_path))
    model_path.chmod(0o644)
    return work, model_path, paths, x, y


def _log_loss(probs, labels):
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1))))


def test_kept_alive_sandbox_trains_two_rounds_and_lowers_the_loss(
    docker_client, runner_image, training_inputs, training_pool  # noqa: F811 - fixtures
):
    work, model_path, paths, x, y = training_inputs
    prestart(training_pool, docker_client, runner_image, LIMITS)
    session = TrainingSession(
        image=runner_image,
        model_path=model_path,
        model_format="torchscript",
        train_features_path=paths["train-features"],
        train_labels_path=paths["train-labels"],
        val_features_path=paths["val-features"],
        work_dir=work,
        limits=LIMITS,
        client=docker_client,
        pool=training_pool,
    )
    with session:
        check_kind(session, training_pool)
        w0 = session.w0
        assert sorted(w0) == ["fc.bias", "fc.weight"] and w0["fc.weight"].shape == (3, 4)
        container = docker_client.api.inspect_container(session.container_id)
        assert container["HostConfig"]["NetworkMode"] == "none"
        assert container["HostConfig"]["ReadonlyRootfs"] is True
        assert container["Config"]["User"] == "65534:65534"
        assert container["HostConfig"]["CapDrop"] == ["ALL"] and container["HostConfig"]["Privileged"] is False
        mounts = {m["Destination"]: m for m in container["Mounts"]}
        if training_pool is None:
            assert sorted(mounts) == [
                "/data/train/features.npy", "/data/train/labels.npy", "/data/validation/features.npy",
                "/model/model.pt", "/out", "/requests",
            ]  # fmt: skip
        else:  # one read-only job folder: the model, the training rows, the validation features
            assert sorted(mounts) == ["/job", "/out"]
            job = Path(mounts["/job"]["Source"])
            assert sorted(p.name for p in job.iterdir()) == [
                "model.pt", "requests", "train-features.npy", "train-labels.npy", "val-features.npy",
            ]  # fmt: skip
        assert [t for t, m in mounts.items() if m["RW"]] == ["/out"]
        config = {"local_epochs": 3, "batch_size": 16, "learning_rate": 0.5, "proximal_mu": 0.0, "seed": 1}
        offset = {n: np.zeros_like(v) for n, v in w0.items()}
        first = session.run_round(offset, config)
        assert first.n_examples == 240
        offset = {n: first.weights[n] - w0[n] for n in w0}
        second = session.run_round(offset, config)
        val0 = _log_loss(first.val_predictions, y[240:])  # w0 on the validation rows
        val1 = _log_loss(second.val_predictions, y[240:])  # w0 + D_1
        assert val1 < val0 - 0.1
        assert second.train_loss < first.train_loss
        cid = session.container_id
    import docker.errors

    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(cid)

    # predict with --weights-offset: the parent plus D gives the fine-tuned model
    final = {n: second.weights[n] - w0[n] for n in w0}
    from safetensors.numpy import save_file

    offset_path = work / "offset.safetensors"
    save_file(final, str(offset_path))
    offset_path.chmod(0o644)
    run = sandbox.run_prediction(
        image=runner_image, model_path=model_path, model_format="torchscript",
        features_path=paths["val-features"], work_dir=work, limits=LIMITS, client=docker_client,
        weights_offset_path=offset_path,
    )  # fmt: skip
    preds = load_predictions(
        run.predictions_path.parent, n_rows=60, task_type="multiclass_classification", n_classes=3, max_bytes=MiB
    )
    expected = torch.softmax(
        torch.from_numpy(x[240:]) @ torch.from_numpy(second.weights["fc.weight"]).T
        + torch.from_numpy(second.weights["fc.bias"]),
        dim=1,
    ).numpy()
    np.testing.assert_allclose(preds, expected, atol=1e-5)


MiB = 1024 * 1024


def test_a_crashing_training_runner_is_reported_and_removed(
    docker_client, runner_image, training_inputs, training_pool  # noqa: F811 - fixtures
):
    work, model_path, paths, *_ = training_inputs
    prestart(training_pool, docker_client, runner_image, LIMITS)
    bad_labels = work / "bad-labels.npy"
    np.save(bad_labels, np.zeros(3, dtype=np.int64))  # wrong row count: the runner exits
    bad_labels.chmod(0o644)
    session = TrainingSession(
        image=runner_image, model_path=model_path, model_format="torchscript",
        train_features_path=paths["train-features"], train_labels_path=bad_labels,
        val_features_path=paths["val-features"], work_dir=work, limits=LIMITS, client=docker_client,
        pool=training_pool,
    )  # fmt: skip
    with pytest.raises(sandbox.SandboxCrashed):
        session.start()
    check_kind(session, training_pool)
    assert session._closed and not session.mount_dir.exists()
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(session.container_id)


import docker.errors  # noqa: E402
