"""Pins the training sandbox's container config and the train split store (no engine)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluator import sandbox
from evaluator.datasets import InvalidData, load_task_data, load_train_data, register_task_data
from evaluator.sandbox import RUN_PROFILE, Limits, container_config
from evaluator.training_sandbox import training_container_config

LIMITS = Limits(memory_mb=512, cpus=1.5, timeout_seconds=60, max_output_mb=64)


def make_config(model_format="torchscript"):
    return training_container_config(
        image_id="sha256:" + "a" * 64,
        model_path=Path("/site/work/model/model.pt"),
        model_format=model_format,
        train_features_path=Path("/site/work/train-features.npy"),
        train_labels_path=Path("/site/work/train-labels.npy"),
        val_features_path=Path("/site/work/val-features.npy"),
        requests_dir=Path("/site/work/requests-1"),
        out_dir=Path("/site/work/out-1"),
        limits=LIMITS,
    )


def test_training_config_keeps_the_whole_hardened_profile():
    config = make_config()
    for key, value in RUN_PROFILE.items():
        if key != "environment":
            assert config[key] == value, key
    assert config["network_mode"] == "none" and config["read_only"] is True
    assert config["user"] == "65534:65534" and config["cap_drop"] == ["ALL"]
    assert config["security_opt"] == ["no-new-privileges", f"seccomp={sandbox.SECCOMP_PROFILE}"]
    assert config["privileged"] is False
    assert config["mem_limit"] == config["memswap_limit"] == "512m"
    assert config["pids_limit"] == 256
    for forbidden in ("cap_add", "devices", "pid_mode", "volumes", "runtime", "network", "privileged_mode"):
        assert forbidden not in config
    # same profile as a prediction run, apart from the command and the mounts
    predict = container_config(
        image_id="sha256:" + "a" * 64, model_path=Path("/m.pt"), model_format="torchscript",
        features_path=Path("/f.npy"), out_dir=Path("/o"), limits=LIMITS,
    )  # fmt: skip
    differ = {k for k in set(config) | set(predict) if config.get(k) != predict.get(k)}
    assert differ == {"command", "mounts", "name"}


def test_training_mounts_only_the_train_rows_read_only_and_one_writable_output():
    mounts = {m["Target"]: m for m in make_config()["mounts"]}
    assert set(mounts) == {
        "/model/model.pt", "/data/train/features.npy", "/data/train/labels.npy",
        "/data/validation/features.npy", "/requests", "/out",
    }  # fmt: skip
    assert [t for t, m in mounts.items() if not m["ReadOnly"]] == ["/out"]
    assert all(m["Type"] == "bind" for m in mounts.values())
    assert not any("test" in m["Source"] or "labels/labels.npy" in m["Source"] for m in mounts.values())


def test_training_command_is_the_runner_train_subcommand():
    config = make_config()
    assert config["entrypoint"] == ["python3", "-m", "runner"]
    assert config["command"][:3] == ["train", "--format", "torchscript"]
    assert "--val-labels" not in config["command"]


def test_only_trainable_formats_get_a_training_sandbox():
    with pytest.raises(ValueError):
        make_config("sklearn")


def test_prediction_with_an_offset_mounts_it_read_only():
    config = container_config(
        image_id="sha256:" + "a" * 64, model_path=Path("/m.pt"), model_format="torchscript",
        features_path=Path("/f.npy"), out_dir=Path("/o"), limits=LIMITS,
        weights_offset_path=Path("/w/offset.safetensors"),
    )  # fmt: skip
    mounts = {m["Target"]: m for m in config["mounts"]}
    assert mounts[sandbox.OFFSET_TARGET]["ReadOnly"] is True
    assert config["command"][-2:] == ["--weights-offset", sandbox.OFFSET_TARGET]


def _register(tmp_path, split, n=50):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.save(tmp_path / f"x-{split}.npy", x)
    np.save(tmp_path / f"y-{split}.npy", y)
    return register_task_data(
        data_dir=tmp_path / "data", task_id="5", features_path=tmp_path / f"x-{split}.npy",
        labels_path=tmp_path / f"y-{split}.npy", input_spec={"n_features": 3},
        task_type="binary_classification", split=split,
    )  # fmt: skip


def test_the_train_split_is_stored_apart_with_a_seeded_validation_holdout(tmp_path):
    test_meta = _register(tmp_path, "test", n=30)
    train_meta = _register(tmp_path, "train", n=50)
    assert train_meta["split_sizes"] == {"train": 40, "validation": 10}
    assert load_task_data(data_dir=tmp_path / "data", task_id="5").fingerprint == test_meta["fingerprint"]
    data = load_train_data(data_dir=tmp_path / "data", task_id="5")
    again = load_train_data(data_dir=tmp_path / "data", task_id="5")
    np.testing.assert_array_equal(data.validation_rows, again.validation_rows)
    assert not set(data.fit_rows) & set(data.validation_rows) and len(data.fit_rows) == 40
    meta = json.loads((tmp_path / "data" / "tasks" / "5" / "train" / "meta.json").read_text())
    assert meta["split"] == "train"

    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    paths = data.write_sandbox_inputs(work)
    assert [p.name for p in paths] == ["train-features.npy", "train-labels.npy", "val-features.npy"]
    assert np.load(paths[1]).shape == (40,)  # training labels only; validation labels stay here
    assert sorted(p.name for p in work.iterdir()) == sorted(p.name for p in paths)


def test_an_unknown_split_is_refused(tmp_path):
    with pytest.raises(InvalidData):
        _register(tmp_path, "validation")


def _pooled_config(model_format="torchscript", runtime="runc"):
    from evaluator.sandbox_pool import PoolKey
    from evaluator.training_pool import pooled_training_config

    key = PoolKey("sha256:" + "a" * 64, model_format, LIMITS, runtime)
    return pooled_training_config(key=key, job_dir=Path("/site/work/pool-1/m/job"), out_dir=Path("/site/work/pool-1/m/out-1"))


def test_a_pre_started_training_sandbox_has_the_cold_profile():
    pooled, cold = _pooled_config(), make_config()
    differ = {k for k in set(pooled) | set(cold) if pooled.get(k) != cold.get(k)}
    assert differ == {"command", "mounts", "name", "labels"}
    assert pooled["labels"] == {sandbox.SANDBOX_LABEL: "1", "vaultbench.pool": "1"}
    assert "runtime" not in pooled


def test_a_pre_started_training_sandbox_mounts_one_read_only_job_folder():
    mounts = {m["Target"]: m for m in _pooled_config()["mounts"]}
    assert set(mounts) == {"/job", "/out"}
    assert mounts["/job"]["ReadOnly"] is True and mounts["/out"]["ReadOnly"] is False
    assert mounts["/job"]["Source"] == "/site/work/pool-1/m/job"


def test_a_pre_started_training_runner_reads_its_inputs_from_the_job_folder():
    command = _pooled_config()["command"]
    cold = make_config()["command"]
    assert command[0] == cold[0] == "train"
    assert command[1::2] == cold[1::2]  # the same flags, in the same order
    values = dict(zip(command[1::2], command[2::2], strict=True))
    assert values == {
        "--format": "torchscript", "--model": "/job/model.pt", "--train-features": "/job/train-features.npy",
        "--train-labels": "/job/train-labels.npy", "--val-features": "/job/val-features.npy",
        "--requests": "/job/requests", "--output": "/out",
    }  # fmt: skip
    assert _pooled_config("python_package")["command"][4] == "/job/model"
    with pytest.raises(ValueError):
        _pooled_config("sklearn")
