"""The warm pool's container profile and settings, without an engine (the engine side is
tests/sandbox/test_pool.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluator import sandbox
from evaluator.config import ConfigError, load_config
from evaluator.sandbox import RUN_PROFILE, SANDBOX_LABEL, Limits
from evaluator.sandbox_pool import JOB_TARGET, POOL_LABEL, PoolKey, pooled_container_config

LIMITS = Limits(memory_mb=768, cpus=1.5, timeout_seconds=60, max_output_mb=32, pids=128, scratch_mb=64)
JOB = Path("/work/pool-x/0123/job")
OUT = Path("/work/pool-x/0123/out-4567")


def pooled(model_format: str = "sklearn", runtime: str = "runc") -> dict:
    key = PoolKey("sha256:" + "a" * 64, model_format, LIMITS, runtime)
    return pooled_container_config(key=key, job_dir=JOB, out_dir=OUT, name="vb-pool-test")


def cold(model_format: str = "sklearn") -> dict:
    return sandbox.container_config(
        image_id="sha256:" + "a" * 64, model_path=Path("/w/m"), model_format=model_format,
        features_path=Path("/w/f.npy"), out_dir=OUT, limits=LIMITS, name="vb-pool-test",
    )  # fmt: skip


@pytest.mark.parametrize("model_format", sorted(sandbox.MODEL_FORMATS))
def test_a_pooled_container_has_the_cold_runs_profile_except_command_mounts_and_labels(model_format):
    warm, base = pooled(model_format), cold(model_format)
    assert set(warm) == set(base)
    different = {k for k in base if warm[k] != base[k]}
    assert different == {"command", "mounts", "labels"}
    for name, value in RUN_PROFILE.items():
        if name != "environment":
            assert warm[name] == value, name
    assert warm["environment"] == base["environment"]  # thread counts from the same limits
    for name in ("mem_limit", "memswap_limit", "nano_cpus", "pids_limit", "ulimits", "tmpfs"):
        assert warm[name] == base[name], name
    assert "runtime" not in warm


def test_a_pooled_container_mounts_its_job_folder_read_only_and_out_as_the_one_writable_path():
    mounts = {m["Target"]: m for m in pooled()["mounts"]}
    assert set(mounts) == {JOB_TARGET, "/out"}
    assert mounts[JOB_TARGET]["Source"] == str(JOB) and mounts[JOB_TARGET]["ReadOnly"] is True
    assert mounts["/out"]["Source"] == str(OUT) and mounts["/out"]["ReadOnly"] is False
    assert all(m["Type"] == "bind" for m in mounts.values())


def test_a_pooled_container_runs_the_runners_pooled_mode_and_carries_both_labels():
    config = pooled("torchscript")
    assert config["entrypoint"] == list(sandbox.RUNNER_ENTRYPOINT)
    assert config["command"] == ["pooled", "--format", "torchscript", "--job", "/job", "--output", "/out/predictions.npy"]
    assert config["labels"] == {SANDBOX_LABEL: "1", POOL_LABEL: "1"}
    assert config["read_only"] is True and config["network_mode"] == "none" and config["cap_drop"] == ["ALL"]
    assert config["privileged"] is False and "cap_add" not in config


def test_gvisor_is_kept_for_pooled_containers():
    assert pooled(runtime="runsc")["runtime"] == "runsc"


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError):
        pooled("pickle")


BASE = 'hub_url = "https://hub.example.org"\nsite_token = "vbs_' + "a" * 40 + '"\ndata_dir = "data"\n'


def test_the_pool_is_on_by_default_and_can_be_sized_or_switched_off(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(BASE)
    config = load_config(path, env={})
    assert (config.pool_size, config.pool_memory_mb) == (1, 4096)
    path.write_text(BASE + "pool_size = 0\npool_memory_mb = 1024\n")
    config = load_config(path, env={})
    assert (config.pool_size, config.pool_memory_mb) == (0, 1024)
    config = load_config(path, env={"VAULTBENCH_POOL_SIZE": "3", "VAULTBENCH_POOL_MEMORY_MB": "0"})
    assert (config.pool_size, config.pool_memory_mb) == (3, 0)


@pytest.mark.parametrize("line", ["pool_size = -1", "pool_size = 1.5", 'pool_size = "many"', "pool_memory_mb = -5"])
def test_bad_pool_settings_name_the_setting(tmp_path, line):
    path = tmp_path / "site.toml"
    path.write_text(BASE + line + "\n")
    with pytest.raises(ConfigError, match=line.split()[0]):
        load_config(path, env={})


def test_an_agent_with_an_injected_sandbox_or_pool_size_zero_starts_no_pool(tmp_path):
    from dataclasses import replace

    from evaluator.agent import Agent

    path = tmp_path / "site.toml"
    path.write_text(BASE)
    config = load_config(path, env={})
    injected = Agent(config, client=None, sandbox_runner=lambda **kw: None)  # type: ignore[arg-type]
    assert injected.start_pool() is None
    off = Agent(replace(config, pool_size=0), client=None)  # type: ignore[arg-type]
    assert off.start_pool() is None


def test_a_pooled_runner_reads_one_checked_request_and_gives_up_when_none_comes(tmp_path, monkeypatch):
    from evaluator.runner import pooled
    from evaluator.runner.errors import RunnerError

    request = tmp_path / "request.json"
    request.write_text('{"batch_size": 512, "weights_offset": false}')
    assert pooled.read_request(request)["batch_size"] == 512
    request.write_text('{"batch_size": 0}')
    with pytest.raises(RunnerError):
        pooled.read_request(request)
    monkeypatch.setattr(pooled, "IDLE_EXIT_SECONDS", 0.05)
    with pytest.raises(RunnerError) as err:
        pooled.read_request(tmp_path / "never.json")
    assert err.value.exit_code == pooled.EXIT_IDLE
