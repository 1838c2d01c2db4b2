"""The job queue under trouble: an agent killed mid-job, two agents sharing a site, a hub that
goes away and comes back. Every job is processed and counted exactly once."""

from __future__ import annotations

import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    e2e_task,
    remove_site_containers,
    site_containers,
    wait_for,
    wait_for_submission,
)
from tests.sandbox.test_hostile_models import VALID_PREDICT

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def slow_package(path: Path, seconds: float) -> Path:
    """A valid model that sleeps in load(): long enough to kill or cut off its agent mid-job."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            "model.py",
            textwrap.dedent(f"""
            import time

            def load(model_dir):
                time.sleep({seconds})
                return None
            """)
            + VALID_PREDICT,
        )
    return path


def audit_count(action: str, job_id: int) -> int:
    from marketplace.audit.models import AuditEvent

    return AuditEvent.objects.filter(action=action, object_type="job", object_id=str(job_id)).count()


def test_agent_killed_mid_job_loses_its_lease_and_a_second_agent_finishes_the_job_once(
    settings, owner, hub_vendor, make_site_dir, agents, agent_processes, docker_client, test_split, tmp_path
):
    from marketplace.jobs.models import Job, JobStatus, Result
    from marketplace.jobs.services import jobs_requeue_expired
    from marketplace.leaderboard.models import LeaderboardEntry

    settings.VAULTBENCH_LEASE_SECONDS = 3
    features, labels = test_split
    task = e2e_task(owner, release_delay_seconds=0)  # the vendor's board shows it at once
    site_dir = make_site_dir("site-a")
    site_dir.register(task.id, features, labels)

    first = agent_processes(site_dir)
    submission_id = hub_vendor.upload(
        task.id, slow_package(tmp_path / "slow.zip", 5), "python_package", "slow"
    )
    job = wait_for(
        lambda: Job.objects.filter(submission_id=submission_id, status=JobStatus.RUNNING).first(),
        what="the first agent to claim the job",
    )
    first_holder = job.lease_holder
    # Kill it while its model sleeps in the sandbox.
    wait_for(lambda: site_containers(docker_client, site_dir, running_only=True), what="the sandbox to start")
    first.kill()

    # Beat's sweep, once the lease has run out: the job goes back to the queue.
    wait_for(lambda: jobs_requeue_expired() == 1, timeout=30, what="the lease to expire")
    job.refresh_from_db()
    assert (job.status, job.lease_holder, job.attempts) == (JobStatus.QUEUED, "", 1)

    second = agents(site_dir)
    submission = wait_for_submission(submission_id)
    assert submission.status == "scored", first.log()

    job.refresh_from_db()
    assert (job.status, job.attempts, job.lease_holder) == (JobStatus.SUCCEEDED, 2, second.agent_id)
    assert first_holder != second.agent_id
    assert Result.objects.filter(job=job).count() == 1
    assert (audit_count("job.lease_expired", job.id), audit_count("job.succeeded", job.id)) == (1, 1)
    (entry,) = LeaderboardEntry.objects.filter(submission_id=submission_id)
    assert (entry.n_sites, entry.n_rows) == (1, len(labels))
    board = hub_vendor.get(f"/api/v1/tasks/{task.id}/leaderboard").json()
    assert [row["submission_id"] for row in board["results"]] == [submission_id]
    (ledger_entry,) = site_dir.ledger_entries()  # the killed agent released nothing
    assert ledger_entry.sha256 == Result.objects.get(job=job).ledger_sha256

    # The killed agent's sandbox outlives it (nothing labels it with its agent, so nothing
    # reaps it); the second agent's own container is gone. Clean up the orphan.
    second.stop()
    orphans = site_containers(docker_client, site_dir)
    assert len(orphans) <= 1
    remove_site_containers(docker_client, site_dir)
    assert site_containers(docker_client, site_dir) == []


def test_two_agents_on_one_site_share_the_queue_and_process_every_job_exactly_once(
    owner, hub_vendor, make_site_dir, agents, example_artifacts, test_split
):
    from marketplace.jobs.models import Job, JobStatus, Result

    n_jobs = 6
    features, labels = test_split
    task = e2e_task(owner)
    site_dir = make_site_dir("site-a")
    site_dir.register(task.id, features, labels)
    artifact = example_artifacts["python_package"]
    ids = [hub_vendor.upload(task.id, artifact, "python_package", name=f"m{i}") for i in range(n_jobs)]
    assert Job.objects.filter(site=site_dir.site, status=JobStatus.QUEUED).count() == n_jobs

    a, b = agents(site_dir), agents(site_dir)  # same site, same data dir, two processes' worth
    for submission_id in ids:
        assert wait_for_submission(submission_id).status == "scored"

    jobs = list(Job.objects.filter(site=site_dir.site))
    assert len(jobs) == n_jobs
    assert all(job.status == JobStatus.SUCCEEDED and job.attempts == 1 for job in jobs)
    holders = [job.lease_holder for job in jobs]
    assert set(holders) == {a.agent_id, b.agent_id}, holders  # both got some, none got one twice
    assert Result.objects.filter(job__in=jobs).count() == n_jobs
    entries = site_dir.ledger_entries()
    assert sorted(str(e.job_id) for e in entries) == sorted(str(job.id) for job in jobs)
    # posted attempts: "<job id>@<attempt token>", each job's once. The hub can score the last
    # submission before its agent has written "posted" after the hub's answer: wait for that write.
    expected = sorted(str(job.id) for job in jobs)
    deadline = time.monotonic() + 60
    while True:
        state = site_dir.state()
        posted = sorted(k.split("@")[0] for k in state["posted"])
        if (posted, state["pending"]) == (expected, {}) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert posted == expected
    assert state["pending"] == {}


def test_agent_rides_out_a_hub_outage_and_reposts_a_failed_result_exactly_once(
    owner, hub_vendor, make_site_dir, agents, forwarder, docker_client, test_split, tmp_path, quiet_agent_logs
):
    from marketplace.jobs.models import Job, JobStatus, Result

    caplog = quiet_agent_logs
    features, labels = test_split
    task = e2e_task(owner)
    site_dir = make_site_dir("site-a")
    site_dir.register(task.id, features, labels)  # straight to the hub
    # From now on the agent reaches the hub only through the forwarder, which is off.
    site_dir.write_config(
        hub_url=forwarder.url,
        retry="max_attempts = 2\nbackoff_base_seconds = 0.2\nbackoff_max_seconds = 1.0\nrequest_timeout_seconds = 10\n",
    )
    submission_id = hub_vendor.upload(
        task.id, slow_package(tmp_path / "slow.zip", 4), "python_package", "slow"
    )

    def unreachable() -> int:  # the client's retries (the agent's own warning is said once per period)
        return sum("failed (ConnectionError" in r.getMessage() for r in caplog.records)

    agents(site_dir)
    wait_for(lambda: unreachable() >= 3, timeout=30, what="the agent to retry while the hub is down")
    assert Job.objects.get(submission_id=submission_id).status == JobStatus.QUEUED

    # The hub comes back: the agent claims and starts the job; the hub goes away mid-run.
    forwarder.start()
    job = wait_for(
        lambda: Job.objects.filter(submission_id=submission_id, status=JobStatus.RUNNING).first(),
        what="the claim",
    )
    wait_for(lambda: site_containers(docker_client, site_dir, running_only=True), what="the sandbox to start")
    assert any(line.endswith(f"/jobs/{job.id}/artifact") for line in forwarder.request_lines())
    forwarder.stop()

    # The result cannot be posted: it stays pending in the agent's state, and the hub has nothing.
    wait_for(
        lambda: [p["job_id"] for p in site_dir.state()["pending"].values()] == [job.id],
        timeout=60, what="a pending result",
    )  # fmt: skip

    def reposts() -> int:
        return sum("re-posting the pending" in r.getMessage() for r in caplog.records)

    def result_posts() -> list[str]:
        wanted = f"POST /api/v1/agent/jobs/{job.id}/result"
        return [line for line in forwarder.request_lines() if line == wanted]

    wait_for(lambda: reposts() >= 2, timeout=30, what="re-post attempts while the hub is down")
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and not Result.objects.filter(job=job).exists()
    assert result_posts() == []  # nothing reached the hub

    forwarder.start()
    submission = wait_for_submission(submission_id)
    assert submission.status == "scored"
    wait_for(lambda: site_dir.state()["pending"] == {}, timeout=30, what="the pending result to be cleared")
    polls_before = len(forwarder.request_lines())
    wait_for(lambda: len(forwarder.request_lines()) >= polls_before + 3, timeout=30, what="more agent polls")

    assert len(result_posts()) == 1  # re-posted once when the hub came back, never again
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1
    assert Result.objects.filter(job=job).count() == 1
    assert audit_count("job.succeeded", job.id) == 1
    state = site_dir.state()
    assert [k.split("@")[0] for k in state["posted"]] == [str(job.id)] and state["pending"] == {}
    (entry,) = site_dir.ledger_entries()
    assert entry.sha256 == Result.objects.get(job=job).ledger_sha256
