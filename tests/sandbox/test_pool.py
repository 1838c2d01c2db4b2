"""The warm pool against the real engine: a pooled container is a sandbox like a cold one
(same profile, same probes), takes exactly one job, and is gone after it.

The hostile-model probes are the cold suite's own (``test_hostile_models``), run here through
``WarmPool.run_prediction`` on a container that was started before the job.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import docker.errors
import numpy as np
import pytest

from evaluator import sandbox
from evaluator.sandbox import SANDBOX_LABEL, InvalidOutput, Limits, SandboxTimeout
from evaluator.sandbox_pool import POOL_LABEL, PoolKey, WarmPool
from evaluator.workdirs import sweep_orphans
from tests.sandbox.conftest import DEFAULT_LIMITS
from tests.sandbox.test_hostile_models import (
    EACCES,
    EPERM,
    EROFS,
    MOUNTINFO_PROBE,
    VALID_PREDICT,
    assert_gone,
    load_valid,
    probe_model,
    probe_of,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def pool(site):
    with WarmPool(work_root=site.work_dir, size=1, memory_mb=4096) as warm:
        yield warm


def key_of(site, model_format: str, limits: Limits = DEFAULT_LIMITS) -> PoolKey:
    return PoolKey(sandbox.resolve_image(site.client, site.image), model_format, limits, "runc")


def run_pooled(site, pool, model, model_format, *, limits: Limits = DEFAULT_LIMITS, must_be_warm=True):
    """One job through the pool; with ``must_be_warm``, on a container started (and ready) before."""
    key = key_of(site, model_format, limits)
    if must_be_warm:
        assert pool.wait_ready(key, timeout=180), "the pool did not start a container"
        pooled_ids = {c.id for c in site.client.containers.list(filters={"label": POOL_LABEL}, sparse=True)}
    run = pool.run_prediction(
        image=site.image, model_path=model, model_format=model_format, features_path=site.features_path,
        work_dir=site.work_dir, limits=limits, client=site.client,
    )  # fmt: skip
    if must_be_warm:
        assert run.container_id in pooled_ids, "the job did not run in a pre-started container"
    return run


def containers_of(site, pool) -> list:
    """The pooled containers of this pool (other tests may run pools of their own)."""
    folder = str(pool.dir.resolve())
    return [
        c for c in site.client.containers.list(filters={"label": POOL_LABEL}, sparse=True)
        if any(m.get("Source", "").startswith(folder + "/") for m in c.attrs.get("Mounts", []))
    ]  # fmt: skip


def wait_gone(client, container_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.containers.get(container_id)
        except docker.errors.NotFound:
            return
        time.sleep(0.05)
    assert_gone(client, container_id)


# --- the profile --------------------------------------------------------------------------


def test_a_pooled_container_has_the_cold_runs_host_config(site, pool):
    """The engine's view of a pooled container (HostConfig) equals a cold one's for the same limits."""
    key = key_of(site, "sklearn")
    assert pool.wait_ready(key, timeout=180)
    pooled = containers_of(site, pool)
    assert len(pooled) == 1
    mount_dir = sandbox.make_mount_dir(site.work_dir)
    cold_config = sandbox.container_config(
        image_id=key.image_id, model_path=site.features_path, model_format="sklearn",
        features_path=site.features_path, out_dir=sandbox.make_output_dir(mount_dir), limits=DEFAULT_LIMITS,
    )  # fmt: skip
    cold = site.client.containers.create(**cold_config)
    try:
        cold_host = cold.attrs["HostConfig"]
        for container in pooled:
            host = site.client.api.inspect_container(container.id)["HostConfig"]
            different = {
                name: (host.get(name), value)
                for name, value in cold_host.items()
                if name not in ("Mounts", "Binds") and host.get(name) != value
            }
            assert different == {}
            assert host["ReadonlyRootfs"] is True and host["NetworkMode"] == "none"
            targets = {m["Target"]: m.get("ReadOnly", False) for m in host["Mounts"]}
            assert targets == {"/job": True, "/out": False}
            assert container.attrs["Labels"][SANDBOX_LABEL] == "1"
    finally:
        cold.remove(force=True)


def test_pooled_runs_as_nobody_without_capabilities_network_or_writable_inputs(site, pool):
    model = site.package(
        probe_model(
            """
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\\t" in line)
result["uid"], result["gid"] = os.getuid(), os.getgid()
for key in ("CapEff", "CapPrm", "CapInh", "CapAmb", "NoNewPrivs", "Seccomp"):
    result[key] = status.get(key, "").strip()
result["setuid0"] = _errno(lambda: os.setuid(0))
result["interfaces"] = sorted(os.listdir("/sys/class/net"))
result["write_root"] = _errno(lambda: open("/evil", "w"))
result["write_job"] = _errno(lambda: open("/job/evil", "w"))
result["write_model"] = _errno(lambda: open("/job/model/model.py", "a"))
result["write_request"] = _errno(lambda: open("/job/request.json", "w"))
result["write_tmp"] = _errno(lambda: open("/tmp/fine", "w").write("x"))
"""
        )
    )
    run = run_pooled(site, pool, model, "python_package")
    probe = probe_of(run.logs)
    assert (probe["uid"], probe["gid"]) == (65534, 65534)
    for key in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert int(probe[key], 16) == 0, key
    assert (probe["NoNewPrivs"], probe["Seccomp"]) == ("1", "2")
    assert probe["setuid0"] == EPERM
    assert probe["interfaces"] == ["lo"]
    assert probe["write_root"] == EROFS and probe["write_job"] == EROFS
    assert probe["write_model"] in (EROFS, EACCES)  # the staged model: the agent's, and mounted read-only
    assert probe["write_request"] in (EROFS, EACCES)  # the host's request: never writable by the sandbox
    assert probe["write_tmp"] == 0
    load_valid(site, run)
    wait_gone(site.client, run.container_id)


def test_pooled_mountinfo_shows_one_random_folder_of_the_pool_and_not_the_site_data(site, pool):
    import re

    run = run_pooled(site, pool, site.package(probe_model(MOUNTINFO_PROBE)), "python_package")
    probe = probe_of(run.logs)
    everything = json.dumps(probe["mountinfo"])
    assert str(site.root) not in everything and str(site.features_path) not in everything
    roots = {point: root for root, point in probe["mountinfo"] if point in ("/job", "/out")}
    pool_dir = re.escape(str(pool.dir.resolve()))
    assert re.fullmatch(rf"{pool_dir}/[0-9a-f]{{32}}/job", roots["/job"]), roots
    assert re.fullmatch(rf"{pool_dir}/[0-9a-f]{{32}}/out-[0-9a-f]{{32}}", roots["/out"]), roots
    load_valid(site, run)


def test_pooled_endless_loop_times_out_and_the_container_is_gone(site, pool):
    model = site.package("def load(model_dir):\n    while True:\n        pass\n" + VALID_PREDICT)
    limits = Limits(memory_mb=512, cpus=1, timeout_seconds=3, max_output_mb=8)
    with pytest.raises(SandboxTimeout):
        run_pooled(site, pool, model, "python_package", limits=limits, must_be_warm=False)
    started = time.monotonic()
    with pytest.raises(SandboxTimeout) as err:
        run_pooled(site, pool, model, "python_package", limits=limits)
    assert time.monotonic() - started < 60
    wait_gone(site.client, err.value.container_id)


def test_pooled_output_flood_is_invalid(site, pool):
    model = site.package(
        """
def load(model_dir):
    for i in range(100):
        open(f"/out/flood-{i}", "w").close()
"""
        + VALID_PREDICT
    )
    with pytest.raises(InvalidOutput):
        run_pooled(site, pool, model, "python_package")


# --- one fresh container per job ----------------------------------------------------------

# Job 1 leaves every trace it can; the same probe, run by job 2, reports what it finds of them.
LEAVE_TRACES = """
import os, subprocess
def load(model_dir):
    for path in ("/tmp/vb-trace", "/dev/shm/vb-trace"):
        try:
            open(path, "w").write("job 1 was here")
        except OSError:
            pass
    try:
        open("/out/../vb-trace", "w").write("x")
    except OSError:
        pass
    # a process meant to outlive the job and tamper with whatever runs next
    subprocess.Popen(["python3", "-c", "import time; open('/tmp/vb-daemon','w').write('alive'); time.sleep(600)"],
                     start_new_session=True)
    import time; time.sleep(0.5)
    return None
"""

FIND_TRACES = """
import os
def load(model_dir):
    found = []
    for path in ("/tmp/vb-trace", "/dev/shm/vb-trace", "/tmp/vb-daemon", "/vb-trace"):
        if os.path.exists(path):
            found.append(path)
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if b"vb-daemon" in cmd:
                found.append(f"process {pid}")
    print("PROBE " + __import__("json").dumps({"found": found}), flush=True)
    return len(found)

def predict(model, features):
    import numpy as np
    p1 = 1.0 if model else 0.0
    return np.stack([np.full(len(features), 1 - p1), np.full(len(features), p1)], axis=1).astype(np.float32)
"""


def test_a_hostile_job_leaves_nothing_the_next_pooled_job_can_see(site, pool):
    hostile = site.package(LEAVE_TRACES + VALID_PREDICT)
    finder = site.package(FIND_TRACES)
    first = run_pooled(site, pool, hostile, "python_package")
    load_valid(site, first)
    second = run_pooled(site, pool, finder, "python_package")
    assert second.container_id != first.container_id
    assert probe_of(second.logs)["found"] == []
    assert load_valid(site, second)[:, 1].max() == 0.0  # nothing found: P(class 1) = 0
    wait_gone(site.client, first.container_id)
    wait_gone(site.client, second.container_id)


def test_trace_probe_positive_control_finds_traces_left_in_its_own_container(site, pool):
    """Both halves in ONE job (one container): the finder sees the traces and says so in its
    predictions, so an empty report above means the traces were gone, not unseen."""
    both = LEAVE_TRACES.replace("def load(", "def _leave(") + FIND_TRACES.replace(
        "def load(model_dir):\n    found = []", "def load(model_dir):\n    _leave(model_dir)\n    found = []"
    )
    run = run_pooled(site, pool, site.package(both), "python_package")
    found = probe_of(run.logs)["found"]
    assert "/tmp/vb-trace" in found and "/dev/shm/vb-trace" in found
    assert any(item.startswith("process ") for item in found)
    assert load_valid(site, run)[:, 1].min() == 1.0


def test_the_next_pooled_container_is_already_running_beside_a_job_and_unreachable(site):
    """With two containers pooled, job 1 runs while job 2's container waits: job 1 sees no other
    container's processes or job folder, and job 2's result is its own."""
    with WarmPool(work_root=site.work_dir, size=2, memory_mb=4096) as pool:
        looker = site.package(
            probe_model(
                """
result["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
result["cmdlines"] = [open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
                      for p in os.listdir("/proc") if p.isdigit()]
result["job"] = sorted(os.listdir("/job"))
"""
            )
        )
        key = key_of(site, "python_package")
        assert pool.wait_ready(key, count=2, timeout=180)
        run = run_pooled(site, pool, looker, "python_package")
        probe = probe_of(run.logs)
        assert len(containers_of(site, pool)) >= 1  # the next job's container was there meanwhile
        # Its own PID namespace: its init (pid 1) and its runner, not the waiting container's.
        assert probe["pids"][0] == 1 and len(probe["pids"]) == 2, probe["cmdlines"]
        assert sum("pooled" in c for c in probe["cmdlines"]) == 2
        assert probe["job"] == ["features.npy", "model", "request.json"]
        load_valid(site, run)


def test_a_pooled_container_that_died_before_its_job_leaves_the_job_to_a_cold_run(site, pool):
    key = key_of(site, "sklearn")
    assert pool.wait_ready(key, timeout=180)
    (victim,) = containers_of(site, pool)
    victim.kill()
    victim.wait(timeout=30)
    import joblib as jl
    from sklearn.linear_model import LogisticRegression

    artifact = site.root / "model.joblib"
    jl.dump(LogisticRegression().fit(site.features, site.features[:, 0] > 0), artifact)
    run = run_pooled(site, pool, site.prepare(artifact, "sklearn"), "sklearn", must_be_warm=False)
    assert run.container_id != victim.id
    assert load_valid(site, run).shape == (len(site.features), 2)
    wait_gone(site.client, victim.id)


def test_pooled_sklearn_predictions_equal_the_cold_runs(site, pool):
    import joblib as jl
    from sklearn.linear_model import LogisticRegression

    artifact = site.root / "model.joblib"
    jl.dump(LogisticRegression().fit(site.features, site.features[:, 0] > 0), artifact)
    model = site.prepare(artifact, "sklearn")
    cold = load_valid(site, site.run(model, "sklearn"))
    run_pooled(site, pool, model, "sklearn", must_be_warm=False)  # asks the pool for this key
    warm = load_valid(site, run_pooled(site, pool, model, "sklearn"))
    np.testing.assert_array_equal(warm, cold)


# --- life cycle ---------------------------------------------------------------------------


def test_close_removes_every_pooled_container_and_the_pool_folder(site):
    pool = WarmPool(work_root=site.work_dir, size=2, memory_mb=4096)
    key = key_of(site, "onnx")
    assert pool.wait_ready(key, count=2, timeout=180)
    folder = pool.dir
    ids = [c.id for c in containers_of(site, pool)]
    assert len(ids) == 2
    pool.close()
    for container_id in ids:
        assert_gone(site.client, container_id)
    assert not folder.exists()


def test_the_memory_bound_caps_the_idle_pool(site):
    limits = Limits(memory_mb=512, cpus=1.0, timeout_seconds=60, max_output_mb=8)
    with WarmPool(work_root=site.work_dir, size=3, memory_mb=1024) as pool:
        key = key_of(site, "onnx", limits)
        assert pool.wait_ready(key, count=2, timeout=180)
        time.sleep(2)
        assert pool.ready_count(key) == 2  # a third would pass 1024 MiB of limits


def test_a_dead_agents_pool_is_swept_and_a_live_ones_is_left(site):
    live = WarmPool(work_root=site.work_dir, size=1, memory_mb=4096)
    dead = WarmPool(work_root=site.work_dir, size=1, memory_mb=4096)
    try:
        key = key_of(site, "onnx")
        assert live.wait_ready(key, timeout=180) and dead.wait_ready(key, timeout=180)
        dead_ids = [c.id for c in containers_of(site, dead)]
        # The agent died: its pool thread and its lock are gone, its containers and folder stay.
        with dead._cond:
            dead._closed = True
            dead._idle.clear()
            dead._cond.notify_all()
        dead._thread.join(30)
        os.close(dead._dir_lock)
        assert dead_ids and dead.dir.exists()
        assert sweep_orphans(site.work_dir) == 1
        assert not dead.dir.exists() and live.dir.exists()
        for container_id in dead_ids:
            assert_gone(site.client, container_id)
        assert live.ready_count(key) == 1
    finally:
        live.close()


def test_a_pooled_container_runs_under_gvisor_when_the_site_says_so(site):
    """``sandbox_runtime = "runsc"`` reaches pooled containers too: the kernel the model sees is
    gVisor's (positive control: the same probe in a runc pool sees the host's)."""
    from evaluator.sandbox_runtime import engine_runtimes
    from tests.sandbox.test_gvisor import KERNEL_PROBE

    if "runsc" not in engine_runtimes(site.client):
        pytest.skip("the engine has no runsc runtime (.ci/lib/docker-engine.sh registers it)")
    host = open("/proc/version").read()
    seen = {}
    for runtime in ("runsc", "runc"):
        with WarmPool(work_root=site.work_dir, size=1, memory_mb=4096, runtime=runtime) as pool:
            key = PoolKey(sandbox.resolve_image(site.client, site.image), "python_package", DEFAULT_LIMITS, runtime)
            assert pool.wait_ready(key, timeout=180)
            (container,) = containers_of(site, pool)
            assert site.client.api.inspect_container(container.id)["HostConfig"]["Runtime"] == runtime
            run = pool.run_prediction(
                image=site.image, model_path=site.package(probe_model(KERNEL_PROBE)), model_format="python_package",
                features_path=site.features_path, work_dir=site.work_dir, limits=DEFAULT_LIMITS, client=site.client,
            )  # fmt: skip
            assert run.container_id == container.id
            seen[runtime] = probe_of(run.logs)["version"]
            load_valid(site, run)
    assert seen["runsc"] != host and seen["runc"] == host


def test_an_agent_process_that_exits_without_closing_its_pool_leaves_no_container(site):
    """The pool's threads are daemons; an atexit hook removes its containers anyway."""
    import subprocess
    import sys

    script = f"""
import sys
from pathlib import Path
from evaluator import sandbox
from evaluator.sandbox import Limits
from evaluator.sandbox_pool import PoolKey, WarmPool
pool = WarmPool(work_root=Path({str(site.work_dir)!r}), size=1, memory_mb=4096)
client = sandbox.get_client()
key = PoolKey(sandbox.resolve_image(client, {site.image!r}), "onnx", Limits(**{DEFAULT_LIMITS.__dict__!r}), "runc")
assert pool.wait_ready(key, timeout=180)
ids = [s.container_id for q in pool._idle.values() for s in q]
client.containers.get(ids[0])  # there while the process runs
print(pool.dir, *ids, flush=True)
"""  # exits without pool.close()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    folder, *ids = done.stdout.strip().splitlines()[-1].split()
    assert len(ids) == 1
    for container_id in ids:
        assert_gone(site.client, container_id)
    assert not Path(folder).exists()
