"""Warm training sandboxes (evaluator/training_pool.py) against the real engine: a session
takes a pre-started container and asks for its replacement when it ends; a pooled container
that died before its run is discarded and the run starts cold; pool size 0 turns it off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from evaluator.agent import Agent
from evaluator.client import HubClient
from evaluator.config import AgentConfig
from evaluator.sandbox import Limits, resolve_image
from evaluator.sandbox_pool import PoolKey
from evaluator.training_pool import TrainingPool
from evaluator.training_sandbox import TrainingSession
from tests.sandbox.conftest import docker_client, runner_image  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LIMITS = Limits(memory_mb=1024, cpus=1.0, timeout_seconds=120, max_output_mb=16)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(x), dim=1)


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    paths = []
    for name, arr in (("x", rng.normal(size=(50, 4)).astype(np.float32)), ("y", rng.integers(0, 2, size=50)),
                      ("v", rng.normal(size=(10, 4)).astype(np.float32))):  # fmt: skip
        np.save(work / f"{name}.npy", arr)
        (work / f"{name}.npy").chmod(0o644)
        paths.append(work / f"{name}.npy")
    torch.jit.save(torch.jit.script(Tiny()), str(work / "model.pt"))
    (work / "model.pt").chmod(0o644)
    return work, paths


def _session(inputs, image, pool, client):
    work, (x, y, v) = inputs
    return TrainingSession(
        image=image, model_path=work / "model.pt", model_format="torchscript", train_features_path=x,
        train_labels_path=y, val_features_path=v, work_dir=work, limits=LIMITS, client=client, pool=pool,
    )  # fmt: skip


def _round(session):
    offset = {n: np.zeros_like(w) for n, w in session.w0.items()}
    return session.run_round(offset, {"local_epochs": 1, "batch_size": 50, "learning_rate": 0.1, "seed": 0})


def test_a_session_takes_a_warm_container_and_asks_for_the_next_when_it_ends(
    tmp_path, inputs, docker_client, runner_image  # noqa: F811
):
    with TrainingPool(work_root=tmp_path / "pools", size=1) as pool:
        key = PoolKey(resolve_image(docker_client, runner_image), "torchscript", LIMITS, "runc")
        first = _session(inputs, runner_image, pool, docker_client)
        with first:  # nothing pooled yet: cold, and no container started beside the run
            assert not first.warm and pool.ready_count() == 0
            assert _round(first).n_examples == 50
        assert pool.wait_ready(key, timeout=300)  # the replacement for the next run
        second = _session(inputs, runner_image, pool, docker_client)
        with second:
            assert second.warm
            pooled_id = second.container_id
            assert _round(second).n_examples == 50
        import docker.errors

        with pytest.raises(docker.errors.NotFound):  # used for one run, removed after it
            docker_client.api.inspect_container(pooled_id)


def test_a_pooled_container_that_died_before_its_run_is_discarded_and_the_run_starts_cold(
    tmp_path, inputs, docker_client, runner_image  # noqa: F811
):
    with TrainingPool(work_root=tmp_path / "pools", size=1) as pool:
        key = PoolKey(resolve_image(docker_client, runner_image), "torchscript", LIMITS, "runc")
        assert pool.wait_ready(key, timeout=300)
        (slot,) = list(pool._idle[key])
        docker_client.api.kill(slot.container_id)
        docker_client.api.wait(slot.container_id, timeout=60)
        with _session(inputs, runner_image, pool, docker_client) as session:
            assert not session.warm and session.container_id != slot.container_id
            assert _round(session).n_examples == 50


def test_pool_size_zero_turns_warm_training_sandboxes_off(tmp_path):
    def agent(pool_size):
        config = AgentConfig(hub_url="http://127.0.0.1:9", site_token="t", data_dir=tmp_path / "data",
                             work_dir=tmp_path / "work", pool_size=pool_size)  # fmt: skip
        return Agent(config, HubClient("http://127.0.0.1:9", "t"))

    off = agent(0)
    assert off._training_pool() is None
    off.warm_training_sandbox("torchscript", LIMITS)  # nothing to warm, never fatal
    on = agent(1)
    try:
        assert isinstance(on._training_pool(), TrainingPool)
    finally:
        on.close_training_pool()
