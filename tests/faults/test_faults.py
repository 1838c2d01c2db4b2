"""A few faults of each family against a whole Vaultbench of real processes on loopback
(tests/faults/world.py), each followed by the invariants: every job and submission ends, once,
within the deadline; each site's ledger equals the hub's receipts; nothing is left behind.
benchmarks/fault_campaign.py runs hundreds of these. About 2-3 minutes here."""

from __future__ import annotations

import time

import numpy as np
import pytest

from evaluator.failpoints import POINTS
from tests.faults.world import World, wait_for

# One world per module (a module fixture: hub processes, agents): its tests stay on one xdist worker.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.xdist_group("faults")]


def assert_holds(world: World) -> None:
    violations = world.check(timeout=180)
    logs = "\n".join(site.agent.log()[-3000:] for site in world.sites if site.agent)
    assert violations == [], f"{violations}\n--- agents ---\n{logs}"


@pytest.mark.parametrize("point", POINTS)
def test_an_agent_killed_at_each_step_of_a_release(world, point):
    site = world.sites[0]
    agent = world.restart_agent(site, failpoints=point)
    submission = world.upload(name=point)
    wait_for(lambda: not agent.alive(), timeout=90, what=f"the agent to die at {point}")
    world.start_agent(site)  # restarted, without the failpoint
    assert_holds(world)
    statuses = {status for _, status, *_ in world.jobs_of(submission)}
    assert statuses == {"succeeded"}, world.jobs_of(submission)


def test_an_agent_killed_while_its_sandbox_runs(world):
    site = world.sites[0]
    submission = world.upload(sleep=4, name="slow")
    wait_for(lambda: world.running_containers(site), timeout=90, what="the sandbox to start")
    site.agent.kill()
    world.start_agent(site)  # sweeps the dead agent's container and folder, takes attempt 2
    assert_holds(world)
    [attempts] = [a for j, s, r, site_id, sub, a in world.jobs() if sub == submission and site_id == site.site_id]
    assert attempts == 2


def test_the_celery_worker_killed_and_the_broker_down_while_results_arrive(world):
    before = world.audit_count("submission.reconciled")
    world.procs["worker"].kill()
    with world.broker_down():
        submission = world.upload(name="broker")
        wait_for(lambda: {s for _, s, *_ in world.jobs_of(submission)} == {"succeeded"}, timeout=120,
                 what="both sites to post while the broker is down")  # fmt: skip
    assert_holds(world)  # the supervisor restarts the worker; the sweeper scores what was lost
    assert world.audit_count("submission.reconciled") > before


def test_a_full_disk_claims_nothing_says_so_and_resumes(world):
    site = world.sites[0]
    world.write_config(site, min_free_disk_mb=10**9)
    world.restart_agent(site)
    submission = world.upload(name="disk")
    wait_for(lambda: world.site_health(site)[0] == "disk_full", timeout=60, what="the heartbeat to say disk full")
    time.sleep(3)
    [(job_id, status, *_)] = [j for j in world.jobs_of(submission) if j[3] == site.site_id]
    assert status == "queued"  # never claimed
    world.write_config(site)
    world.restart_agent(site)
    assert_holds(world)
    assert world.job_status(job_id) == "succeeded" and world.site_health(site)[0] == "ok"


def test_the_hub_killed_and_restarted_mid_run(world):
    world.upload(sleep=2, name="hub")
    wait_for(lambda: any(world.running_containers(s) for s in world.sites), timeout=90, what="a sandbox")
    world.procs["web"].kill()
    time.sleep(3)
    assert_holds(world)  # supervise() restarts it


def test_data_changed_under_a_running_job(world):
    site = world.sites[0]
    path = world.features_path(site)
    original = path.read_bytes()
    submission = world.upload(sleep=4, name="data")
    wait_for(lambda: world.running_containers(site), timeout=90, what="the sandbox to start")
    with open(path, "r+b") as fh:  # in place, under the running job
        fh.seek(len(original) - 4 * 8)
        fh.write(np.full(8, 9.0, dtype=np.float32).tobytes())
    [job_id] = [j for j, s, r, site_id in world.jobs_of(submission) if site_id == site.site_id]
    wait_for(lambda: world.job_status(job_id) in ("succeeded", "failed"), timeout=120, what="the job to end")
    assert world.job_status(job_id) == "succeeded"  # it ran on the copy it had checked
    path.write_bytes(original)
    assert_holds(world)


def test_agents_with_clocks_two_hours_off(world):
    ahead, behind = world.sites
    world.restart_agent(ahead, clock_offset="+2h")
    world.restart_agent(behind, clock_offset="-2h")
    submission = world.upload(name="clock")
    assert_holds(world)
    assert sorted((s, a) for _, s, _, _, sub, a in world.jobs() if sub == submission) == [("succeeded", 1)] * 2
    for site in world.sites:
        world.restart_agent(site)


def test_the_sites_reconcile_command_finds_each_ledger_equal_to_the_hubs_receipts(world):
    import json
    import subprocess
    import sys

    from tests.faults.world import REPO, _clean_env

    assert_holds(world)
    for site in world.sites:
        out = subprocess.run(
            [sys.executable, "-m", "evaluator", "ledger", "reconcile", "--config", str(site.root / "site.toml")],
            cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        report = json.loads(out.stdout)
        assert report["agrees"] and report["site_entries"] == report["hub_receipts"] > 0
