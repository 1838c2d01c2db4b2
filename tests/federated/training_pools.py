"""Cold and pre-started (pooled) training sessions for the real-engine tests: every test that
takes the ``training_pool`` fixture runs twice, once with a cold session and once with a session
that takes a container the pool started ahead (``evaluator/training_pool.py``)."""

from __future__ import annotations

import pytest

from evaluator.sandbox import resolve_image
from evaluator.sandbox_pool import PoolKey
from evaluator.training_pool import TrainingPool


@pytest.fixture(params=["cold", "pooled"])
def training_pool(request, tmp_path):
    """None (cold) or a TrainingPool; ``prestart`` fills it for a session's key."""
    if request.param == "cold":
        yield None
        return
    pool = TrainingPool(work_root=tmp_path / "pools", size=1, memory_mb=4096)
    try:
        yield pool
    finally:
        pool.close()


def prestart(pool, client, image, limits, model_format="torchscript") -> None:
    """Wait until the pool holds a ready container for sessions of this kind (no-op when cold)."""
    if pool is None:
        return
    key = PoolKey(resolve_image(client, image), model_format, limits, pool.runtime)
    assert pool.wait_ready(key, timeout=300), "the pool did not get a training sandbox ready"


def check_kind(session, pool) -> None:
    """The session ran in the kind of container the test asked for."""
    assert session.warm is (pool is not None)
