"""Pins the sandbox run profile (SECURITY.md section 1) without a Docker engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluator import sandbox
from evaluator.sandbox import RUN_PROFILE, Limits, container_config

LIMITS = Limits(memory_mb=512, cpus=1.5, timeout_seconds=60, max_output_mb=64)


def make_config(model_format: str = "sklearn", **overrides) -> dict:
    kwargs = dict(
        image_id="sha256:" + "a" * 64,
        model_path=Path("/site/work/model/model.joblib"),
        model_format=model_format,
        features_path=Path("/site/work/features.npy"),
        out_dir=Path("/site/work/out-1"),
        limits=LIMITS,
    )
    kwargs.update(overrides)
    return container_config(**kwargs)


def mounts_by_target(config: dict) -> dict[str, dict]:
    return {m["Target"]: m for m in config["mounts"]}


def test_network_is_none_and_root_is_read_only():
    config = make_config()
    assert config["network_mode"] == "none"
    assert config["read_only"] is True


def test_runs_as_nobody_with_no_capabilities_and_no_new_privileges():
    config = make_config()
    assert config["user"] == "65534:65534"
    assert config["cap_drop"] == ["ALL"]
    assert config["security_opt"] == ["no-new-privileges"]
    assert config["init"] is True


@pytest.mark.parametrize(
    "key",
    [
        "cap_add",
        "devices",
        "device_requests",
        "pid_mode",
        "userns_mode",
        "uts_mode",
        "cgroupns",
        "volumes",
        "volumes_from",
        "links",
        "runtime",
        "sysctls",
        "extra_hosts",
        "ports",
        "oom_kill_disable",
        "group_add",
        "cgroup_parent",
        "dns",
        "network",
    ],
)
def test_loosening_settings_are_absent(key):
    assert key not in make_config()


def test_not_privileged_and_ipc_private():
    config = make_config()
    assert config["privileged"] is False
    assert config["ipc_mode"] == "private"


def test_no_seccomp_or_apparmor_override():
    for opt in make_config()["security_opt"]:
        assert "seccomp" not in opt and "apparmor" not in opt and "label" not in opt


def test_memory_equals_memory_plus_swap_and_other_limits():
    config = make_config()
    assert config["mem_limit"] == "512m"
    assert config["memswap_limit"] == config["mem_limit"]
    assert config["nano_cpus"] == 1_500_000_000
    assert config["pids_limit"] == 256
    assert config["shm_size"] == "256m"


def test_ulimits():
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in make_config()["ulimits"]}
    assert ulimits["nofile"] == (1024, 1024)
    assert ulimits["core"] == (0, 0)
    # Every single file is capped: the larger of the output cap and the scratch size.
    assert ulimits["fsize"] == (256 * 1024 * 1024, 256 * 1024 * 1024)


def test_tmp_is_a_small_noexec_tmpfs():
    tmpfs = make_config()["tmpfs"]
    assert list(tmpfs) == ["/tmp"]
    opts = tmpfs["/tmp"].split(",")
    for flag in ("noexec", "nosuid", "nodev", "size=256m"):
        assert flag in opts


def test_inputs_read_only_and_out_is_the_only_writable_mount():
    config = make_config()
    mounts = mounts_by_target(config)
    assert set(mounts) == {"/model/model.joblib", "/data/features.npy", "/out"}
    assert all(m["Type"] == "bind" for m in mounts.values())
    assert mounts["/model/model.joblib"]["ReadOnly"] is True
    assert mounts["/data/features.npy"]["ReadOnly"] is True
    assert mounts["/out"]["ReadOnly"] is False
    # The features file is mounted alone, never its folder (labels may sit next to it).
    assert mounts["/data/features.npy"]["Source"] == "/site/work/features.npy"


def test_no_docker_socket_or_host_root_mount():
    for mount in make_config()["mounts"]:
        assert "docker.sock" not in mount["Source"]
        assert mount["Source"] not in ("/", "/var/run", "/run", "/proc", "/sys")


def test_environment_is_allow_listed():
    env = make_config()["environment"]
    assert set(env) == {
        "HOME",
        "TMPDIR",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
    }
    assert env["HOME"] == "/tmp"
    assert env["OMP_NUM_THREADS"] == "2"


def test_logs_are_bounded():
    log_config = make_config()["log_config"]
    assert log_config["Type"] == "json-file"
    assert log_config["Config"]["max-size"] == "1m"


def test_image_is_the_pinned_id_and_command_is_fixed():
    config = make_config(batch_size=128)
    assert config["image"] == "sha256:" + "a" * 64
    assert config["entrypoint"] == ["python3", "-m", "runner"]
    assert config["command"] == [
        "predict",
        "--format",
        "sklearn",
        "--model",
        "/model/model.joblib",
        "--features",
        "/data/features.npy",
        "--output",
        "/out/predictions.npy",
        "--batch-size",
        "128",
    ]


def test_python_package_mounts_the_folder():
    config = make_config("python_package", model_path=Path("/site/work/model"))
    assert "/model" in mounts_by_target(config)
    assert config["command"][4] == "/model"


def test_container_is_never_auto_removed_before_inspection():
    assert make_config()["auto_remove"] is False


def test_unknown_format_and_bad_batch_size_refused():
    with pytest.raises(ValueError):
        make_config("pickle")
    with pytest.raises(ValueError):
        make_config(batch_size=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(memory_mb=0),
        dict(cpus=0),
        dict(timeout_seconds=0),
        dict(max_output_mb=0),
        dict(pids=100_000),
        dict(scratch_mb=0),
    ],
)
def test_limits_out_of_range_are_refused(kwargs):
    base = dict(memory_mb=512, cpus=1.0, timeout_seconds=60, max_output_mb=64)
    base.update(kwargs)
    with pytest.raises(ValueError):
        Limits(**base)


def test_profile_constant_is_read_only():
    with pytest.raises(TypeError):
        RUN_PROFILE["network_mode"] = "host"  # type: ignore[index]


def test_exception_reasons():
    assert sandbox.SandboxError("x").reason == "internal_error"
    assert sandbox.SandboxTimeout("x").reason == "timeout"
    assert sandbox.SandboxOutOfMemory("x").reason == "out_of_memory"
    assert sandbox.InvalidOutput("x").reason == "invalid_output"
    assert sandbox.SandboxCrashed("x").reason == "crashed"
    assert sandbox.SandboxUnavailable("x").reason == "internal_error"
    for cls in (
        sandbox.SandboxTimeout,
        sandbox.SandboxOutOfMemory,
        sandbox.InvalidOutput,
        sandbox.SandboxCrashed,
        sandbox.SandboxUnavailable,
    ):
        assert issubclass(cls, sandbox.SandboxError)


def test_output_dir_is_fresh_and_owned_by_the_sandbox_user(tmp_path):
    out = sandbox.make_output_dir(tmp_path)
    assert out.is_dir() and not any(out.iterdir())
    st = out.stat()
    import os

    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (65534, 65534)
        assert st.st_mode & 0o777 == 0o700
    assert sandbox.make_output_dir(tmp_path) != out


def test_unreadable_inputs_are_refused_before_any_docker_call(tmp_path):
    features = tmp_path / "features.npy"
    features.write_bytes(b"x")
    features.chmod(0o600)
    model = tmp_path / "model.joblib"
    model.write_bytes(b"x")
    with pytest.raises(sandbox.SandboxUnavailable):
        sandbox.prepare_prediction(
            image_id="sha256:" + "a" * 64,
            model_path=model,
            model_format="sklearn",
            features_path=features,
            work_dir=tmp_path,
            limits=LIMITS,
        )


def test_symlinked_inputs_are_refused(tmp_path):
    real = tmp_path / "real.npy"
    real.write_bytes(b"x")
    link = tmp_path / "features.npy"
    link.symlink_to(real)
    model = tmp_path / "model.joblib"
    model.write_bytes(b"x")
    with pytest.raises(sandbox.SandboxUnavailable):
        sandbox.prepare_prediction(
            image_id="sha256:" + "a" * 64,
            model_path=model,
            model_format="sklearn",
            features_path=link,
            work_dir=tmp_path,
            limits=LIMITS,
        )


def test_output_usage_counts_without_following_links(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 1000)
    (tmp_path / "link").symlink_to("/etc/passwd")
    size, entries = sandbox.output_usage(tmp_path)
    assert entries == 2
    assert size >= 1000
