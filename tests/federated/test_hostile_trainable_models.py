"""Hostile TorchScript models that try to void per-example clipping, in the real runner image.

Each hostile model trains one record-level DP-SGD round in a kept-alive training sandbox; the
runner must end with ``EXIT_POLICY`` (8, which the site reports as ``policy_violation``). The
positive control, the same architecture without the trick, trains the round and its weights
move. Each runs twice: in a cold session and in a pre-started (pooled) one
(``tests/federated/training_pools.py``). About 6-10 s per sandbox (torch import), 12 sandboxes.
"""

from typing import List  # noqa: UP035 - TorchScript needs typing.List

import numpy as np
import pytest
import torch
from torch import nn

from evaluator import sandbox
from evaluator.sandbox import Limits
from evaluator.training_sandbox import TrainingSession
from tests.federated.training_pools import check_kind, prestart, training_pool  # noqa: F401
from tests.sandbox.conftest import docker_client, runner_image  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LIMITS = Limits(memory_mb=1024, cpus=1.0, timeout_seconds=120, max_output_mb=16)
DP = {"example_clip_norm": 1.0, "noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 10}
EXIT_POLICY = 8


class Honest(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(x), dim=1)


class PreviousRow(nn.Module):
    """Each example's gradient encodes the row before it (state across examples)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.prev = torch.zeros(1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.softmax(self.fc(x + self.prev), dim=1)
        self.prev = x.detach()
        return out


class Remembers(nn.Module):
    """Keeps every row it sees in a list attribute."""

    seen: List[torch.Tensor]  # noqa: UP006 - TorchScript

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.seen = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return torch.softmax(self.fc(x), dim=1)


class BufferSum(nn.Module):
    """Accumulates the rows into a buffer, which the output then depends on."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.register_buffer("acc", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.acc.add_(x.detach().sum(0))
        return torch.softmax(self.fc(x + self.acc), dim=1)


class WritesParameters(nn.Module):
    """Writes the row into its own weights during the forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.fc.weight[0].copy_(x.detach().sum(0))
        return torch.softmax(self.fc(x), dim=1)


class ReadsTheTrainingFile(nn.Module):
    """Reads every training row from the mounted file: its gradient could carry all of them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.from_file("/data/train/features.npy", False, 64, dtype=torch.uint8)
        return torch.softmax(self.fc(x) + 0.0 * rows.float().sum(), dim=1)


def _session(tmp_path, docker_client, runner_image, module, pool=None):  # noqa: F811 - fixture values
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=200).astype(np.int64)
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    paths = {}
    for name, arr in (("train-features", x[:160]), ("train-labels", y[:160]), ("val-features", x[160:])):
        paths[name] = work / f"{name}.npy"
        np.save(paths[name], arr)
        paths[name].chmod(0o644)
    model_path = work / "model.pt"
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(module), str(model_path))
    model_path.chmod(0o644)
    prestart(pool, docker_client, runner_image, LIMITS)
    return TrainingSession(
        image=runner_image, model_path=model_path, model_format="torchscript",
        train_features_path=paths["train-features"], train_labels_path=paths["train-labels"],
        val_features_path=paths["val-features"], work_dir=work, limits=LIMITS, client=docker_client,
        pool=pool,
    )  # fmt: skip


def _round(session):
    offset = {n: np.zeros_like(v) for n, v in session.w0.items()}
    config = {"local_epochs": 1, "batch_size": 16, "learning_rate": 0.5, "proximal_mu": 0.0, "seed": 1, "dp": DP}
    return session.run_round(offset, config)


def test_positive_control_trains_a_dp_round(tmp_path, docker_client, runner_image, training_pool):  # noqa: F811
    with _session(tmp_path, docker_client, runner_image, Honest(), training_pool) as session:
        check_kind(session, training_pool)
        w0 = {n: v.copy() for n, v in session.w0.items()}
        result = _round(session)
    moved = sum(float(np.abs(result.weights[n] - w0[n]).sum()) for n in w0)
    assert moved > 0 and result.train_loss is None  # the DP path makes no loss claim


@pytest.mark.parametrize("model", [PreviousRow, Remembers, BufferSum, WritesParameters, ReadsTheTrainingFile])
def test_a_model_that_tries_to_void_per_example_clipping_is_stopped(
    tmp_path, docker_client, runner_image, model, training_pool  # noqa: F811
):
    session = _session(tmp_path, docker_client, runner_image, model(), training_pool)
    with session, pytest.raises(sandbox.SandboxCrashed) as crashed:
        check_kind(session, training_pool)
        _round(session)
    assert crashed.value.exit_code == EXIT_POLICY
    assert "policy violation" in str(crashed.value.logs)
