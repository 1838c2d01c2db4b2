"""Hostile models against the real engine and the real runner image (SECURITY.md 1, 5).

Each probe runs inside the sandbox as vendor code (a python_package or a pickle), prints
one ``PROBE {json}`` line, and the test reads it from the logs (which only the site owner
sees). Positive controls show that each probe would have noticed a weaker sandbox.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import docker.errors
import joblib
import numpy as np
import pytest

from evaluator.outputs import load_predictions
from evaluator.sandbox import (
    InvalidOutput,
    Limits,
    SandboxCrashed,
    SandboxError,
    SandboxOutOfMemory,
    SandboxTimeout,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

EROFS, ENOSPC, ENOENT, EACCES, EPERM, EAGAIN = 30, 28, 2, 13, 1, 11
MiB = 1024 * 1024

VALID_PREDICT = """
def predict(model, features):
    import numpy as np
    return np.full((len(features), 2), 0.5, dtype=np.float32)
"""


def probe_of(text: str) -> dict:
    for line in text.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[len("PROBE ") :])
    raise AssertionError(f"no PROBE line in the logs:\n{text}")


def probe_model(body: str) -> str:
    """model.py whose load() runs ``body`` (which fills ``result``) and prints it."""
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    return f"""
import json, os, errno

def _errno(fn):
    try:
        fn()
        return 0
    except OSError as exc:
        return exc.errno

def load(model_dir):
    result = {{}}
{indented}
    print("PROBE " + json.dumps(result), flush=True)
    return None
{VALID_PREDICT}
"""


def load_valid(site, run, *, task_type="binary_classification", n_classes=2):
    return load_predictions(
        run.predictions_path.parent,
        n_rows=len(site.features),
        task_type=task_type,
        n_classes=n_classes,
        max_bytes=16 * MiB,
    )


def assert_gone(client, container_id: str) -> None:
    assert container_id
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(container_id)


# --- identity, capabilities ---------------------------------------------------------------


def test_runs_as_nobody_with_no_capabilities_and_no_new_privileges(site):
    model = site.package(
        probe_model(
            """
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\\t" in line)
result["uid"], result["gid"] = os.getuid(), os.getgid()
result["groups"] = os.getgroups()
for key in ("CapEff", "CapPrm", "CapInh", "CapAmb", "NoNewPrivs", "Seccomp"):
    result[key] = status.get(key, "").strip()
result["setuid0"] = _errno(lambda: os.setuid(0))
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
result["unshare_user"] = 0 if libc.unshare(0x10000000) == 0 else ctypes.get_errno()
"""
        )
    )
    run = site.run(model, "python_package")
    probe = probe_of(run.logs)
    assert (probe["uid"], probe["gid"]) == (65534, 65534)
    assert probe["groups"] in ([], [65534])
    for key in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert int(probe[key], 16) == 0, key
    assert probe["NoNewPrivs"] == "1"
    assert probe["Seccomp"] == "2"
    assert probe["setuid0"] == EPERM
    assert probe["unshare_user"] == EPERM
    load_valid(site, run)
    assert_gone(site.client, run.container_id)


# --- seccomp: the pinned profile refuses io_uring and other unneeded kernel surface ---------

ENOSYS, EBADF, ESRCH = 38, 9, 3

# Each call uses arguments that the kernel itself would answer with something other than EPERM
# (a descriptor, EBADF, ESRCH, EFAULT, ...), so EPERM means the seccomp filter answered.
SYSCALL_PROBE = """
import ctypes, platform
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
X86 = platform.machine() == "x86_64"
NR = dict(  # x86_64, aarch64 (io_uring and later calls share one numbering)
    io_uring_setup=(425, 425), io_uring_enter=(426, 426), io_uring_register=(427, 427),
    memfd_secret=(447, 447), clone3=(435, 435), ptrace=(101, 117), process_vm_readv=(310, 270),
    userfaultfd=(323, 282), bpf=(321, 280), perf_event_open=(298, 241), add_key=(248, 217),
    request_key=(249, 218), keyctl=(250, 219), kexec_load=(246, 104), kexec_file_load=(320, 294),
    mount=(165, 40), setns=(308, 268), open_by_handle_at=(304, 265), finit_module=(313, 273),
    modify_ldt=(154, None),
)
def call(name, *args):
    nr = NR[name][0 if X86 else 1]
    if nr is None:
        return None
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    err = ctypes.get_errno() if ret == -1 else 0
    if ret >= 0 and name in ("io_uring_setup", "memfd_secret", "userfaultfd"):
        os.close(ret)
    return [ret, err]
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
src, dst = ctypes.create_string_buffer(b"probe-me", 8), ctypes.create_string_buffer(8)
local = iovec(ctypes.cast(dst, ctypes.c_void_p), 8)
remote = iovec(ctypes.cast(src, ctypes.c_void_p), 8)
result["arch"] = platform.machine()
result["io_uring_setup"] = call("io_uring_setup", 1, ctypes.create_string_buffer(120))
result["io_uring_enter"] = call("io_uring_enter", -1, 0, 0, 0, None, 0)
result["io_uring_register"] = call("io_uring_register", -1, 0, None, 0)
result["memfd_secret"] = call("memfd_secret", 0)
result["ptrace"] = call("ptrace", 2, os.getpid(), 0, 0)  # PTRACE_PEEKDATA, not our tracee
iov = dict(local=ctypes.byref(local), remote=ctypes.byref(remote))
result["process_vm_readv"] = call("process_vm_readv", os.getpid(), iov["local"], 1, iov["remote"], 1, 0)
result["modify_ldt"] = call("modify_ldt", 0, ctypes.create_string_buffer(16), 16)
result["userfaultfd"] = call("userfaultfd", 1 | 0x40000000)  # user-mode only, a bad flag
result["bpf"] = call("bpf", 0x7FFF, None, 0)
result["perf_event_open"] = call("perf_event_open", None, 0, -1, -1, 0)
result["add_key"] = call("add_key", None, None, None, 0, 0)
result["request_key"] = call("request_key", None, None, None, 0)
result["keyctl"] = call("keyctl", 0, -1, 0)  # KEYCTL_GET_KEYRING_ID of the thread keyring
result["kexec_load"] = call("kexec_load", 0, 0, None, 0)
result["kexec_file_load"] = call("kexec_file_load", -1, -1, 0, None, 0)
result["mount"] = call("mount", None, None, None, 0, None)
result["setns"] = call("setns", -1, 0)
result["open_by_handle_at"] = call("open_by_handle_at", -1, None, 0)
result["finit_module"] = call("finit_module", -1, None, 0)
result["clone3"] = call("clone3", None, 0)
"""

REMOVED_BY_THE_PINNED_PROFILE = (
    "io_uring_setup", "io_uring_enter", "io_uring_register", "memfd_secret", "ptrace", "modify_ldt",
)  # fmt: skip
ALREADY_REFUSED_BY_THE_DEFAULT = (
    "process_vm_readv", "userfaultfd", "bpf", "perf_event_open", "add_key", "request_key", "keyctl",
    "kexec_load", "kexec_file_load", "mount", "setns", "open_by_handle_at", "finit_module",
)  # fmt: skip
# Without a filter the kernel answers these otherwise whatever its configuration (the others may
# legitimately be EPERM from the kernel itself, e.g. unprivileged bpf or userfaultfd disabled).
REACH_THE_KERNEL_UNCONFINED = (
    "process_vm_readv", "perf_event_open", "add_key", "request_key", "keyctl", "mount", "setns",
    "open_by_handle_at",
)  # fmt: skip


def _host_io_uring() -> tuple[int, int]:
    """io_uring_setup on the host itself: (fd or -1, errno); tells a kernel without io_uring."""
    import ctypes
    import os
    import platform

    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip(f"no syscall table for {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(425), ctypes.c_long(1), ctypes.create_string_buffer(120))
    err = ctypes.get_errno() if ret == -1 else 0
    if ret >= 0:
        os.close(ret)
    return ret, err


def test_pinned_seccomp_refuses_io_uring_and_the_other_removed_syscalls(site):
    run = site.run(site.package(probe_model(SYSCALL_PROBE)), "python_package")
    probe = probe_of(run.logs)
    for name in REMOVED_BY_THE_PINNED_PROFILE + ALREADY_REFUSED_BY_THE_DEFAULT:
        if probe[name] is None:  # modify_ldt exists on x86 only
            assert name == "modify_ldt" and probe["arch"] != "x86_64"
            continue
        assert probe[name] == [-1, EPERM], (name, probe[name])
    assert probe["clone3"] == [-1, ENOSYS]  # so that glibc falls back to clone, whose flags are checked
    load_valid(site, run)  # the model still runs


def test_seccomp_probe_positive_control_under_the_engines_default_profile(site):
    """The same probe with nothing pinned: the engine's default (Debian's Docker 20.10) lets
    io_uring, ptrace and process_vm_readv reach the kernel."""
    host_ret, host_errno = _host_io_uring()
    run = site.run_with_seccomp(site.package(probe_model(SYSCALL_PROBE)), "python_package", None)
    probe = probe_of(run.logs)
    if host_errno == ENOSYS:
        assert probe["io_uring_setup"] == [-1, ENOSYS]
        pytest.skip("this kernel has no io_uring at all: the io_uring probe cannot tell the profiles apart")
    assert host_ret >= 0, f"io_uring_setup on the host: errno {host_errno}"
    assert probe["io_uring_setup"][0] >= 0  # a descriptor: the call reached the kernel
    assert probe["io_uring_enter"] == [-1, EBADF]
    assert probe["io_uring_register"][0] == -1 and probe["io_uring_register"][1] not in (0, EPERM)
    assert probe["ptrace"] == [-1, ESRCH]
    if probe["arch"] == "x86_64":
        assert probe["modify_ldt"] == [0, 0] or probe["modify_ldt"] == [-1, ENOSYS]
    assert probe["memfd_secret"][0] >= 0 or probe["memfd_secret"] == [-1, ENOSYS]
    for name in ALREADY_REFUSED_BY_THE_DEFAULT:  # no change there
        assert probe[name] == [-1, EPERM], (name, probe[name])


def test_seccomp_probe_positive_control_unconfined_reaches_the_kernel(site):
    """Without any filter the calls that the default already refused reach the kernel, which
    answers them otherwise: the probe would notice a profile that let them through."""
    run = site.run_with_seccomp(site.package(probe_model(SYSCALL_PROBE)), "python_package", "unconfined")
    probe = probe_of(run.logs)
    for name in REACH_THE_KERNEL_UNCONFINED:
        assert probe[name] != [-1, EPERM], (name, probe[name])
    assert probe["process_vm_readv"] == [8, 0]
    assert probe["setns"] == [-1, EBADF]
    assert probe["clone3"][1] in (14, 22)  # EFAULT / EINVAL from the kernel, not the filter's ENOSYS


# --- mounts: the host's folder layout stays out of /proc/self/mountinfo ----------------------

MOUNTINFO_PROBE = """
result["mountinfo"] = [line.split(" ")[3:5] for line in open("/proc/self/mountinfo").read().splitlines()]
"""


def _bind_roots(probe: dict) -> dict[str, str]:
    """Mount point -> the host path it came from (the ``root`` field) for the sandbox's inputs."""
    targets = ("/model", "/data/features.npy", "/out")
    return {point: root for root, point in probe["mountinfo"] if point in targets}


def test_mountinfo_does_not_show_the_sites_data_folder(site):
    import re

    run = site.run(site.package(probe_model(MOUNTINFO_PROBE)), "python_package")
    probe = probe_of(run.logs)
    everything = json.dumps(probe["mountinfo"])
    assert str(site.root) not in everything  # the folder holding the site's data
    assert str(site.features_path) not in everything
    roots = _bind_roots(probe)
    assert set(roots) == {"/model", "/data/features.npy", "/out"}
    # every mounted source sits in one random folder of the job's work dir, under a fixed name
    work = re.escape(str(site.work_dir.resolve()))
    folders = set()
    for point, root in roots.items():
        match = re.fullmatch(rf"{work}/([0-9a-f]{{32}})/(model|features\.npy|out-[0-9a-f]{{32}})", root)
        assert match, (point, root)
        folders.add(match.group(1))
    assert len(folders) == 1
    load_valid(site, run)


def test_mountinfo_probe_positive_control_with_the_data_folder_mounted_directly(site):
    """The same probe with the features bind-mounted from where the site keeps them (as before
    the inputs were staged): their host path shows."""
    from evaluator.sandbox import FEATURES_TARGET

    def mount_the_original(config: dict) -> None:
        for mount in config["mounts"]:
            if mount["Target"] == FEATURES_TARGET:
                mount["Source"] = str(site.features_path.resolve())

    run = site.run_modified(site.package(probe_model(MOUNTINFO_PROBE)), "python_package", mount_the_original)
    roots = _bind_roots(probe_of(run.logs))
    assert roots["/data/features.npy"] == str(site.features_path.resolve())
    assert str(site.root) in roots["/data/features.npy"]


# --- network ------------------------------------------------------------------------------


@pytest.fixture
def host_listener():
    """A TCP listener on the host's 127.0.0.1 that records every connection it accepts."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    accepted: list[bytes] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(2)
                try:
                    accepted.append(conn.recv(64))
                except OSError:
                    accepted.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(5)
    server.close()


NETWORK_PROBE = """
import socket
def connect():
    with socket.create_connection(("127.0.0.1", PORT), timeout=3) as s:
        s.sendall(b"sandbox-was-here")
result["connect"] = _errno(connect)
result["interfaces"] = sorted(name for _, name in socket.if_nameindex())
def resolve():
    try:
        socket.getaddrinfo("example.com", 80)
    except socket.gaierror as exc:
        raise OSError(-1, str(exc))
result["dns"] = _errno(resolve)
"""


def test_network_is_unreachable_from_the_sandbox(site, host_listener):
    port, accepted = host_listener
    model = site.package(probe_model(NETWORK_PROBE.replace("PORT", str(port))))
    probe = probe_of(site.run(model, "python_package").logs)
    assert probe["connect"] != 0  # refused: the sandbox's own loopback, nobody listens
    assert probe["interfaces"] == ["lo"]
    assert probe["dns"] != 0
    time.sleep(0.5)
    assert accepted == []


def test_network_probe_positive_control_with_host_network(site, host_listener):
    port, accepted = host_listener
    model = site.package(probe_model(NETWORK_PROBE.replace("PORT", str(port))))
    probe = probe_of(site.run_with_network_mode(model, "python_package", "host").logs)
    assert probe["connect"] == 0
    assert len(probe["interfaces"]) > 1
    deadline = time.monotonic() + 5
    while not accepted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert accepted == [b"sandbox-was-here"]


# --- filesystem ---------------------------------------------------------------------------


def test_root_and_inputs_are_read_only_while_tmp_and_out_are_writable(site):
    model = site.package(
        probe_model(
            """
def write(path):
    with open(path, "wb") as fh:
        fh.write(b"x")
for path in ("/pwned", "/etc/pwned", "/opt/vaultbench/runner/pwned.py", "/model/pwned",
             "/model/model.py", "/data/pwned", "/data/features.npy"):
    result[path] = _errno(lambda: write(path))
result["rm_features"] = _errno(lambda: os.unlink("/data/features.npy"))
result["/tmp"] = _errno(lambda: write("/tmp/ok"))
result["/out"] = _errno(lambda: write("/out/scratch"))
os.unlink("/out/scratch")  # an extra file in /out would make the output invalid
import shutil
def exec_tmp():
    shutil.copy("/bin/true", "/tmp/true2")
    os.chmod("/tmp/true2", 0o755)
    import subprocess
    subprocess.run(["/tmp/true2"], check=True)
result["exec_tmp"] = _errno(exec_tmp)
"""
        )
    )
    run = site.run(model, "python_package")
    probe = probe_of(run.logs)
    for path in ("/pwned", "/etc/pwned", "/opt/vaultbench/runner/pwned.py", "/model/pwned"):
        assert probe[path] == EROFS, path
    assert probe["/model/model.py"] == EROFS
    assert probe["/data/pwned"] == EROFS
    assert probe["/data/features.npy"] == EROFS
    assert probe["rm_features"] in (EROFS, EACCES, 16)  # 16: EBUSY on a bind-mounted file
    assert probe["/tmp"] == 0  # positive control
    assert probe["/out"] == 0  # positive control
    assert probe["exec_tmp"] == EACCES  # /tmp is noexec
    load_valid(site, run)
    assert np.load(site.features_path).shape == site.features.shape


def test_tmpfs_stops_at_its_size(site):
    model = site.package(
        probe_model(
            """
def fill(path, mib):
    with open(path, "wb") as fh:
        for _ in range(mib):
            fh.write(b"\\0" * (1024 * 1024))
result["small"] = _errno(lambda: fill("/tmp/small", 4))
os.unlink("/tmp/small")
def fill_many():
    for i in range(4):  # 4 files of 6 MiB: each under RLIMIT_FSIZE, together past the tmpfs
        fill(f"/tmp/big-{i}", 6)
result["big"] = _errno(fill_many)
result["one_file_past_fsize"] = _errno(lambda: fill("/out/too-big", 20))
os.unlink("/out/too-big")
"""
        )
    )
    # The output cap equals the file cap, so the EFBIG probe's file in /out never exceeds the cap
    # the host watches (a larger file would be a legitimate kill, caught or not by its poll).
    limits = Limits(memory_mb=1024, cpus=1, timeout_seconds=60, max_output_mb=16, scratch_mb=16)
    probe = probe_of(site.run(model, "python_package", limits=limits).logs)
    assert probe["small"] == 0
    assert probe["big"] == ENOSPC
    assert probe["one_file_past_fsize"] == 27  # EFBIG: every file is capped by RLIMIT_FSIZE


def test_labels_next_to_the_features_cannot_be_read(site):
    model = site.package(
        probe_model(
            f"""
result["listing"] = sorted(os.listdir("/data"))
result["labels"] = _errno(lambda: open("/data/labels.npy", "rb").read())
result["host_path"] = _errno(lambda: open({str(site.labels_path)!r}, "rb").read())
result["host_dir"] = _errno(lambda: os.listdir({str(site.root)!r}))
result["features"] = _errno(lambda: open("/data/features.npy", "rb").read())
"""
        )
    )
    probe = probe_of(site.run(model, "python_package").logs)
    assert probe["listing"] == ["features.npy"]
    assert probe["labels"] == ENOENT
    assert probe["host_path"] == ENOENT
    assert probe["host_dir"] == ENOENT
    assert probe["features"] == 0  # positive control: the mounted file is readable


# --- processes, memory, time -------------------------------------------------------------


def test_fork_bomb_stops_at_the_pid_limit(site):
    model = site.package(
        probe_model(
            """
import signal, time
children, error = [], 0
for _ in range(10_000):
    try:
        pid = os.fork()
    except OSError as exc:
        error = exc.errno
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
result["forked"], result["errno"] = len(children), error
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
"""
        )
    )
    limits = Limits(memory_mb=1024, cpus=1, timeout_seconds=60, max_output_mb=8, pids=64)
    run = site.run(model, "python_package", limits=limits)
    probe = probe_of(run.logs)
    assert probe["errno"] == EAGAIN
    assert 10 <= probe["forked"] < 64  # positive control: forking works up to the limit
    load_valid(site, run)


MEMORY_BOMB = (
    """
def load(model_dir):
    blocks = []
    for _ in range(400):
        blocks.append(bytearray(1024 * 1024))  # bytearray zero-fills: pages are touched
    return blocks
"""
    + VALID_PREDICT
)


def test_memory_bomb_is_out_of_memory(site):
    model = site.package(MEMORY_BOMB)
    limits = Limits(memory_mb=128, cpus=1, timeout_seconds=60, max_output_mb=8)
    with pytest.raises(SandboxOutOfMemory) as err:
        site.run(model, "python_package", limits=limits)
    assert err.value.reason == "out_of_memory"
    assert_gone(site.client, err.value.container_id)


def test_memory_bomb_positive_control_fits_a_larger_limit(site):
    model = site.package(MEMORY_BOMB)
    run = site.run(model, "python_package", limits=Limits(1024, 1, 60, 8))
    load_valid(site, run)


def test_oom_killed_child_with_exit_code_zero_is_still_out_of_memory(site):
    model = site.package(
        """
import os

def load(model_dir):
    pid = os.fork()
    if pid == 0:
        blocks = [bytearray(1024 * 1024) for _ in range(400)]
        os._exit(0)
    os.waitpid(pid, 0)  # killed by the OOM killer; the parent carries on
    return None
"""
        + VALID_PREDICT
    )
    limits = Limits(memory_mb=128, cpus=1, timeout_seconds=60, max_output_mb=8)
    with pytest.raises(SandboxOutOfMemory) as err:
        site.run(model, "python_package", limits=limits)
    assert err.value.exit_code == 0  # the exit code alone would have said "fine"


def test_endless_loop_times_out_and_the_container_is_gone(site):
    model = site.package(
        """
def load(model_dir):
    while True:
        pass
"""
        + VALID_PREDICT
    )
    limits = Limits(memory_mb=512, cpus=1, timeout_seconds=3, max_output_mb=8)
    started = time.monotonic()
    with pytest.raises(SandboxTimeout) as err:
        site.run(model, "python_package", limits=limits)
    assert time.monotonic() - started < 30
    assert err.value.reason == "timeout"
    assert_gone(site.client, err.value.container_id)


# --- output -------------------------------------------------------------------------------


def test_huge_predictions_are_invalid_output(site):
    model = site.package(
        """
import numpy as np

def load(model_dir):
    return None

def predict(model, features):
    return np.full((len(features), 200_000), 0.5, dtype=np.float32)  # 32 MB
"""
    )
    limits = Limits(memory_mb=1024, cpus=1, timeout_seconds=60, max_output_mb=4)
    with pytest.raises(InvalidOutput):
        site.run(model, "python_package", limits=limits)


def test_flooding_the_output_folder_is_stopped_before_the_timeout(site):
    model = site.package(
        """
import os, time

def load(model_dir):
    for i in range(1000):
        try:
            with open(f"/out/fill-{i}", "wb") as fh:
                fh.write(b"\\0" * (1024 * 1024))
        except OSError:
            pass
    time.sleep(600)
"""
        + VALID_PREDICT
    )
    limits = Limits(memory_mb=512, cpus=1, timeout_seconds=120, max_output_mb=4)
    started = time.monotonic()
    with pytest.raises(InvalidOutput) as err:
        site.run(model, "python_package", limits=limits)
    assert time.monotonic() - started < 60
    assert_gone(site.client, err.value.container_id)


EXIT_AFTER = """
import os

def load(model_dir):
    return None

def predict(model, features):
    ACTION
    os._exit(0)  # exit 0 without the runner writing anything
"""


@pytest.mark.parametrize(
    "action",
    [
        'os.symlink("/etc/shadow", "/out/predictions.npy")',
        'os.symlink("/data/features.npy", "/out/predictions.npy")',
        'os.mkfifo("/out/predictions.npy")',
        'os.mkdir("/out/predictions.npy")',
        'import numpy as np; np.save("/out/predictions.npy", np.zeros((len(features), 2)));'
        ' os.link("/out/predictions.npy", "/out/second")',
        'import numpy as np; np.save("/out/predictions.npy", np.array([object()] * len(features)),'
        " allow_pickle=True)",
        "pass",
    ],
    ids=["symlink-secret", "symlink-features", "fifo", "dir", "hardlink", "pickle", "nothing"],
)
def test_hostile_output_files_are_invalid(site, action):
    model = site.package(EXIT_AFTER.replace("ACTION", action))
    run = site.run(model, "python_package")
    assert run.exit_code == 0
    with pytest.raises(InvalidOutput):
        load_valid(site, run)


@pytest.mark.parametrize(
    "body,task_type,n_classes",
    [
        ("np.full((len(features), 3), 1 / 3, dtype=np.float32)", "binary_classification", 2),
        ("np.full((len(features), 2), np.nan, dtype=np.float32)", "binary_classification", 2),
        ("np.full(len(features), np.inf, dtype=np.float32)", "regression", None),
        ("np.full((len(features), 2), 7.0, dtype=np.float32)", "binary_classification", 2),
    ],
    ids=["wrong-shape", "nan", "inf", "not-probabilities"],
)
def test_wrong_shape_or_values_are_invalid(site, body, task_type, n_classes):
    model = site.package(
        f"""
import numpy as np

def load(model_dir):
    return None

def predict(model, features):
    return {body}
"""
    )
    run = site.run(model, "python_package")
    with pytest.raises(InvalidOutput):
        load_valid(site, run, task_type=task_type, n_classes=n_classes)


def test_model_that_raises_is_crashed_with_logs_for_the_owner_only(site):
    model = site.package(
        """
def load(model_dir):
    raise RuntimeError("vendor secret sauce failed")
"""
        + VALID_PREDICT
    )
    with pytest.raises(SandboxCrashed) as err:
        site.run(model, "python_package")
    assert err.value.reason == "crashed"
    assert err.value.exit_code == 4
    assert "cannot load model" in err.value.logs


# --- a pickle that runs code on load -----------------------------------------------------


class _MarkerPayload:
    """Unpickling runs ``exec(code)``: the classic malicious-pickle model."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def test_malicious_pickle_runs_only_inside_the_sandbox(site, tmp_path):
    host_marker = tmp_path / "host-marker"
    code = f"""
import json, os
result = {{}}
for path in ({str(host_marker)!r}, "/marker", "/out/../marker", "/tmp/marker"):
    try:
        open(path, "w").write("pwned")
        result[path] = 0
    except OSError as exc:
        result[path] = exc.errno
print("PROBE " + json.dumps(result), flush=True)
"""
    artifact = tmp_path / "evil.joblib"
    joblib.dump(_MarkerPayload(code), artifact)

    from evaluator.artifacts import sha256_file, verify_sha256

    verify_sha256(artifact, sha256_file(artifact))  # the site's checks never unpickle
    model = site.prepare(artifact, "sklearn")
    assert not host_marker.exists()

    with pytest.raises(SandboxCrashed) as err:  # exec returns None: no estimator to call
        site.run(model, "sklearn")
    probe = probe_of(err.value.logs)
    assert probe[str(host_marker)] == ENOENT  # the host path does not exist in there
    assert probe["/marker"] == EROFS
    assert probe["/out/../marker"] == EROFS
    assert probe["/tmp/marker"] == 0  # it did run: inside the sandbox
    assert not host_marker.exists()

    # Positive control: the same bytes loaded on the host do write the marker.
    subprocess.run(
        [sys.executable, "-c", f"import joblib; joblib.load({str(artifact)!r})"],
        check=True,
        capture_output=True,
    )
    assert host_marker.read_text() == "pwned"


# --- happy paths, one per format ---------------------------------------------------------


def test_sklearn_happy_path(site, tmp_path):
    from sklearn.linear_model import LogisticRegression

    labels = (site.features[:, 0] > 0).astype(int)
    clf = LogisticRegression().fit(site.features, labels)
    artifact = tmp_path / "clf.joblib"
    joblib.dump(clf, artifact)
    run = site.run(site.prepare(artifact, "sklearn"), "sklearn", batch_size=7)
    predictions = load_valid(site, run)
    np.testing.assert_allclose(predictions, clf.predict_proba(site.features), atol=1e-5)
    assert run.exit_code == 0 and run.duration_seconds > 0
    assert_gone(site.client, run.container_id)


def test_torchscript_happy_path(site, tmp_path):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(site.features.shape[1], 3), torch.nn.Softmax(dim=1))
    scripted = torch.jit.script(net)
    artifact = tmp_path / "net.pt"
    torch.jit.save(scripted, str(artifact))
    with torch.no_grad():
        expected = net(torch.from_numpy(site.features)).numpy()
    run = site.run(site.prepare(artifact, "torchscript"), "torchscript", batch_size=16)
    predictions = load_valid(site, run, task_type="multiclass_classification", n_classes=3)
    np.testing.assert_allclose(predictions, expected, atol=1e-5)


def test_onnx_happy_path(site, tmp_path):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    labels = np.digitize(site.features[:, 0], [-0.5, 0.5])  # 3 classes
    clf = LogisticRegression(max_iter=500).fit(site.features, labels)
    onx = to_onnx(clf, site.features[:1])  # default: ZipMap probabilities
    artifact = tmp_path / "clf.onnx"
    artifact.write_bytes(onx.SerializeToString())
    run = site.run(site.prepare(artifact, "onnx"), "onnx")
    predictions = load_valid(site, run, task_type="multiclass_classification", n_classes=3)
    np.testing.assert_allclose(predictions, clf.predict_proba(site.features), atol=1e-4)


def test_python_package_with_safetensors_happy_path(site):
    from safetensors.numpy import save

    rng = np.random.default_rng(1)
    weights = {"w": rng.normal(size=(site.features.shape[1],)).astype(np.float32)}
    weights["b"] = np.array([0.25], dtype=np.float32)
    model = site.package(
        """
import os
import numpy as np
from safetensors.numpy import load_file

def load(model_dir):
    return load_file(os.path.join(model_dir, "weights.safetensors"))

def predict(model, features):
    return features @ model["w"] + model["b"][0]
""",
        files={"weights.safetensors": save(weights)},
    )
    run = site.run(model, "python_package", batch_size=9)
    predictions = load_valid(site, run, task_type="regression", n_classes=None)
    np.testing.assert_allclose(predictions, site.features @ weights["w"] + 0.25, rtol=1e-5, atol=1e-5)


def test_missing_image_is_unavailable(site, tmp_path):
    artifact = tmp_path / "m.joblib"
    artifact.write_bytes(b"x")
    site.image = "vaultbench-runner:does-not-exist"
    with pytest.raises(SandboxError) as err:
        site.run(site.prepare(artifact, "sklearn"), "sklearn")
    assert err.value.reason == "internal_error"
