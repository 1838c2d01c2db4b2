"""gVisor (runsc) as the sandbox runtime, against the real engine: a model runs and validates,
the io_uring probe and the other removed syscalls never reach the host kernel, and a positive
control shows the run really was under gVisor (its own kernel answers /proc/version).

Skips, saying why, where the engine has no runsc runtime (.ci/lib/docker-engine.sh installs and
registers it on a fresh machine; evaluator/sandbox_runtime.py says how elsewhere)."""

from __future__ import annotations

import pytest

from evaluator.sandbox_runtime import engine_runtimes, run_prediction_with
from tests.sandbox.conftest import DEFAULT_LIMITS
from tests.sandbox.test_hostile_models import (
    ALREADY_REFUSED_BY_THE_DEFAULT,
    REMOVED_BY_THE_PINNED_PROFILE,
    SYSCALL_PROBE,
    load_valid,
    probe_model,
    probe_of,
)

EPERM = 1
pytestmark = [pytest.mark.docker, pytest.mark.slow]

KERNEL_PROBE = """
result["version"] = open("/proc/version").read()
"""


@pytest.fixture
def runsc(site):
    if "runsc" not in engine_runtimes(site.client):
        pytest.skip("the engine has no runsc runtime: apt-get install runsc and register it in "
                    "/etc/docker/daemon.json, then SIGHUP dockerd (.ci/lib/docker-engine.sh)")  # fmt: skip
    run = run_prediction_with("runsc")

    def under_gvisor(model):
        return run(image=site.image, model_path=model, model_format="python_package",
                   features_path=site.features_path, work_dir=site.work_dir, limits=DEFAULT_LIMITS,
                   client=site.client)  # fmt: skip

    return under_gvisor


def test_a_model_runs_under_gvisor_and_the_kernel_it_sees_is_gvisors(site, runsc):
    run = runsc(site.package(probe_model(KERNEL_PROBE)))
    assert load_valid(site, run).shape[0] == len(site.features)
    host = open("/proc/version").read()
    under = probe_of(run.logs)["version"]
    assert under != host  # positive control: not the host's kernel answering
    plain = probe_of(site.run(site.package(probe_model(KERNEL_PROBE)), "python_package").logs)["version"]
    assert plain == host  # the same probe under runc sees the host's


def test_io_uring_and_the_removed_syscalls_never_reach_the_host_kernel_under_gvisor(site, runsc):
    """The engine's runsc runs with --oci-seccomp: the pinned profile is enforced inside gVisor too
    (without it, gVisor ignores the OCI filter and its own io_uring answers with a descriptor)."""
    probe = probe_of(runsc(site.package(probe_model(SYSCALL_PROBE))).logs)
    for name in REMOVED_BY_THE_PINNED_PROFILE + ALREADY_REFUSED_BY_THE_DEFAULT:
        if probe[name] is None:
            continue
        assert probe[name] == [-1, EPERM], (name, probe[name])
