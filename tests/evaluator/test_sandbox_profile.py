"""Pins the sandbox run profile (SECURITY.md section 1) without a Docker engine."""

from __future__ import annotations

import errno
import json
import stat
from pathlib import Path

import pytest

from evaluator import sandbox, training_sandbox
from evaluator.sandbox import RUN_PROFILE, SECCOMP_PROFILE, SECCOMP_PROFILE_PATH, Limits, container_config

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
    assert config["security_opt"][0] == "no-new-privileges"
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


def test_the_shipped_seccomp_profile_is_pinned_and_nothing_else_is_overridden():
    opts = make_config()["security_opt"]
    assert opts == ["no-new-privileges", f"seccomp={SECCOMP_PROFILE}"]
    assert json.loads(opts[1].removeprefix("seccomp=")) == json.loads(SECCOMP_PROFILE_PATH.read_text())
    for opt in opts:
        assert "unconfined" not in opt and "apparmor" not in opt and "label" not in opt


def _profile() -> dict:
    return json.loads(SECCOMP_PROFILE_PATH.read_text())


def _allowed(profile: dict) -> set[str]:
    return {
        name for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for name in rule["names"]
    }


def test_seccomp_refuses_by_default_with_eperm():
    profile = _profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1
    assert {rule["action"] for rule in profile["syscalls"]} == {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"}


# Removed from the engine's default, or already refused by it and must stay so.
SECCOMP_REFUSED = (
    "io_uring_setup", "io_uring_enter", "io_uring_register", "memfd_secret", "ptrace", "modify_ldt",
    "process_vm_readv", "process_vm_writev", "userfaultfd", "kexec_load", "kexec_file_load", "bpf",
    "perf_event_open", "add_key", "keyctl", "request_key", "mount", "umount", "umount2", "fsopen",
    "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "pivot_root",
    "chroot", "unshare", "setns", "open_by_handle_at", "init_module", "finit_module", "delete_module",
    "kcmp", "pidfd_getfd", "process_madvise", "lookup_dcookie", "quotactl", "quotactl_fd", "acct",
    "swapon", "swapoff", "reboot", "syslog", "iopl", "ioperm", "settimeofday", "clock_settime",
    "stime", "vhangup", "fanotify_init", "sethostname", "setdomainname", "get_mempolicy", "mbind",
    "set_mempolicy", "pkey_alloc", "pkey_free", "pkey_mprotect", "nfsservctl", "uselib", "clone3",
)  # fmt: skip


@pytest.mark.parametrize("name", SECCOMP_REFUSED)
def test_seccomp_never_allows_kernel_surface_the_runner_does_not_need(name):
    assert name not in _allowed(_profile())


def test_clone3_is_answered_enosys_so_glibc_falls_back_to_a_checked_clone():
    rules = [rule for rule in _profile()["syscalls"] if "clone3" in rule["names"]]
    assert rules == [
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "comment": rules[0]["comment"]}
    ]
    (clone,) = [rule for rule in _profile()["syscalls"] if "clone" in rule["names"]]
    # no CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET: threads and forks only
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ"}]


def test_seccomp_rules_depend_on_no_capability_and_map_only_64_bit_abis():
    profile = _profile()
    for rule in profile["syscalls"]:
        for key in ("includes", "excludes"):
            assert "caps" not in rule.get(key, {}) and "minKernel" not in rule.get(key, {}), rule["names"]
    assert profile["archMap"] == [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": []},
    ]


def test_seccomp_still_allows_what_python_numpy_torch_and_onnx_use():
    allowed = _allowed(_profile())
    for name in (
        "read", "write", "openat", "close", "mmap", "munmap", "mprotect", "brk", "futex", "clone",
        "execve", "wait4", "rt_sigaction", "sched_getaffinity", "getrandom", "epoll_wait", "pipe2",
        "socketpair", "statx", "newfstatat", "madvise", "prlimit64", "set_robust_list", "rseq",
    ):  # fmt: skip
        assert name in allowed, name


def test_training_sandboxes_carry_the_same_seccomp_profile():
    config = training_sandbox.training_container_config(
        image_id="sha256:" + "a" * 64,
        model_path=Path("/w/m/model.pt"),
        model_format="torchscript",
        train_features_path=Path("/w/m/train-features.npy"),
        train_labels_path=Path("/w/m/train-labels.npy"),
        val_features_path=Path("/w/m/val-features.npy"),
        requests_dir=Path("/w/m/requests"),
        out_dir=Path("/w/m/out"),
        limits=LIMITS,
    )
    assert config["security_opt"] == ["no-new-privileges", f"seccomp={SECCOMP_PROFILE}"]


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


# --- mounted sources: one random folder of the work dir, fixed names ---------------------------


def _site_files(tmp_path):
    """The site's layout: features in its data folder, the model in a job's work folder."""
    features = tmp_path / "hospital-a" / "data" / "tasks" / "7" / "features" / "features.npy"
    features.parent.mkdir(parents=True)
    features.write_bytes(b"features")
    features.chmod(0o644)
    work = tmp_path / "hospital-a" / "work" / "job-42-abc"
    work.mkdir(parents=True, mode=0o700)
    model = work / "model" / "model.joblib"
    model.parent.mkdir()
    model.write_bytes(b"model")
    model.chmod(0o644)
    return features, work, model


def _prepare(features, work, model, model_format="sklearn", **kwargs):
    return sandbox.prepare_prediction(
        image_id="sha256:" + "a" * 64, model_path=model, model_format=model_format,
        features_path=features, work_dir=work, limits=LIMITS, **kwargs,
    )  # fmt: skip


def test_every_mounted_source_sits_in_one_random_folder_of_the_work_dir(tmp_path):
    import re

    features, work, model = _site_files(tmp_path)
    prepared = _prepare(features, work, model)
    sources = {m["Target"]: m["Source"] for m in prepared.config["mounts"]}
    folder = re.escape(str(work.resolve()))
    assert re.fullmatch(rf"{folder}/[0-9a-f]{{32}}/model\.joblib", sources["/model/model.joblib"])
    mount_dir = Path(sources["/model/model.joblib"]).parent
    assert sources["/data/features.npy"] == str(mount_dir / "features.npy")
    assert re.fullmatch(rf"{re.escape(str(mount_dir))}/out-[0-9a-f]{{32}}", sources["/out"])
    assert prepared.out_dir == Path(sources["/out"])
    data_dir = str(tmp_path / "hospital-a" / "data")
    assert not any(source.startswith(data_dir) or "tasks" in source for source in sources.values())
    # the same bytes, without a copy: a hard link to the verified file
    assert Path(sources["/data/features.npy"]).stat().st_ino == features.stat().st_ino
    assert stat.S_IMODE(mount_dir.stat().st_mode) == 0o700
    assert _prepare(features, work, model).config["mounts"][0]["Source"] != sources["/model/model.joblib"]


def test_inputs_on_another_filesystem_are_copied_with_their_mode(tmp_path, monkeypatch):
    features, work, model = _site_files(tmp_path)

    def cross_device(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(sandbox.os, "link", cross_device)
    prepared = _prepare(features, work, model)
    staged = Path({m["Target"]: m["Source"] for m in prepared.config["mounts"]}["/data/features.npy"])
    assert staged.read_bytes() == b"features" and staged.stat().st_ino != features.stat().st_ino
    assert stat.S_IMODE(staged.stat().st_mode) == 0o644


def test_a_python_package_folder_is_staged_file_by_file(tmp_path):
    features, work, _ = _site_files(tmp_path)
    package = work / "model-pkg"
    (package / "sub").mkdir(parents=True)
    (package / "model.py").write_text("x = 1")
    (package / "sub" / "w.bin").write_bytes(b"w")
    for path in (package, package / "sub"):
        path.chmod(0o755)
    for path in (package / "model.py", package / "sub" / "w.bin"):
        path.chmod(0o644)
    prepared = _prepare(features, work, package, model_format="python_package")
    staged = Path({m["Target"]: m["Source"] for m in prepared.config["mounts"]}["/model"])
    assert staged.name == "model" and staged.parent.parent == work.resolve()
    assert (staged / "sub" / "w.bin").stat().st_ino == (package / "sub" / "w.bin").stat().st_ino
    assert stat.S_IMODE((staged / "sub").stat().st_mode) == 0o755


def test_a_weights_offset_is_staged_next_to_the_model(tmp_path):
    features, work, _ = _site_files(tmp_path)
    model = work / "model.pt"
    model.write_bytes(b"pt")
    model.chmod(0o644)
    offset = tmp_path / "elsewhere" / "weights_offset.safetensors"
    offset.parent.mkdir()
    offset.write_bytes(b"D")
    offset.chmod(0o644)
    prepared = _prepare(features, work, model, model_format="torchscript", weights_offset_path=offset)
    sources = {m["Target"]: m["Source"] for m in prepared.config["mounts"]}
    assert Path(sources[sandbox.OFFSET_TARGET]).parent == Path(sources["/model/model.pt"]).parent
    assert "elsewhere" not in sources[sandbox.OFFSET_TARGET]


class _RecordingClient:
    """Enough of the Docker SDK for TrainingSession._start to build its config; refuses to create."""

    def __init__(self):
        self.config = None
        self.images = self
        self.containers = self

    def get(self, image):
        return type("Image", (), {"id": "sha256:" + "b" * 64})()

    def create(self, **config):
        import docker.errors

        self.config = config
        raise docker.errors.APIError("refused by the test")


def test_training_sessions_stage_their_mounts_and_remove_them_on_close(tmp_path):
    features, work, _ = _site_files(tmp_path)
    model = work / "model.pt"
    model.write_bytes(b"pt")
    model.chmod(0o644)
    client = _RecordingClient()
    session = training_sandbox.TrainingSession(
        image="vaultbench-runner:x", model_path=model, model_format="torchscript",
        train_features_path=features, train_labels_path=features, val_features_path=features,
        work_dir=work, limits=LIMITS, client=client,  # type: ignore[arg-type]
    )  # fmt: skip
    with pytest.raises(sandbox.SandboxUnavailable):
        session.start()
    sources = {m["Target"]: Path(m["Source"]) for m in client.config["mounts"]}
    assert {source.parent for source in sources.values()} == {session.mount_dir}
    assert session.mount_dir.parent == work.resolve() and len(session.mount_dir.name) == 32
    assert sources["/requests"].name == "requests"
    assert sources["/data/train/labels.npy"].name == "train-labels.npy"
    assert not any("tasks" in str(source) for source in sources.values())
    assert client.config["security_opt"] == ["no-new-privileges", f"seccomp={SECCOMP_PROFILE}"]
    assert not session.mount_dir.exists()  # closed after the error: staged inputs gone
    assert features.read_bytes() == b"features"  # the site's own file is untouched
