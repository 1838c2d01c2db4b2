"""The verified-shard cache: one fingerprint check per shard load, a new one on any change."""

from __future__ import annotations

import os

import numpy as np
import pytest

from evaluator import datasets
from evaluator.datasets import DataUnavailable, register_task_data
from evaluator.shard_cache import ShardCache
from evaluator.workdirs import sweep_orphans


@pytest.fixture
def shard(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 4)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(np.int64)
    np.save(tmp_path / "f.npy", features)
    np.save(tmp_path / "l.npy", labels)
    data_dir = tmp_path / "data"
    register_task_data(
        data_dir=data_dir, task_id=7, features_path=tmp_path / "f.npy", labels_path=tmp_path / "l.npy",
        input_spec={"n_features": 4, "n_classes": 2, "task_type": "binary_classification"},
    )  # fmt: skip
    cache = ShardCache(data_dir=data_dir, work_root=tmp_path / "work")
    yield cache, data_dir, features
    cache.close()


def stored_features(data_dir):
    return datasets.task_dir(data_dir, 7) / "features" / datasets.FEATURES_FILE


def test_the_second_job_reuses_the_verified_private_copy(shard):
    cache, data_dir, features = shard
    first = cache.load(7)
    second = cache.load(7)
    assert cache.loads == 1
    assert second.features_path == first.features_path
    assert first.features_path.is_relative_to(cache.dir)  # the copy, not the site's file
    np.testing.assert_array_equal(np.load(first.features_path), features)


def test_a_rewritten_shard_is_loaded_and_verified_again(shard):
    cache, data_dir, features = shard
    cache.load(7)
    path = stored_features(data_dir)
    os.chmod(path, 0o644)
    tampered = features.copy()
    tampered[0, 0] += 1
    np.save(path, tampered)  # the fingerprint in meta.json no longer matches
    with pytest.raises(DataUnavailable):
        cache.load(7)
    assert cache.loads == 1  # the failed load is not cached either
    with pytest.raises(DataUnavailable):
        cache.load(7)


def test_the_same_bytes_touched_are_verified_again_and_still_served(shard):
    cache, data_dir, _ = shard
    first = cache.load(7)
    path = stored_features(data_dir)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = cache.load(7)
    assert cache.loads == 2 and second.features_path != first.features_path
    assert not first.features_path.exists()  # the old copy is gone


def test_close_removes_the_copies_and_a_dead_agents_cache_is_swept(shard, tmp_path):
    cache, _, _ = shard
    cache.load(7)
    other = ShardCache(data_dir=cache.data_dir, work_root=tmp_path / "work")
    other.load(7)
    assert sweep_orphans(tmp_path / "work") == 0  # both locked by this live process
    os.close(other._lock)  # the agent holding it died
    other._lock = -1
    assert sweep_orphans(tmp_path / "work") == 1
    assert not other.dir.exists() and cache.dir.exists()
    cache.close()
    assert not cache.dir.exists()
