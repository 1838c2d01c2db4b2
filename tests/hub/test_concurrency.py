"""Several agents of one site claim at the same moment: each job goes to exactly one of them."""

import threading

import pytest
from django.db import connection, connections

from marketplace.jobs.models import Job, JobStatus
from marketplace.jobs.services import job_claim
from tests.conftest import make_task, register_shard
from tests.hub.helpers import submit

N_AGENTS = 8
N_JOBS = 5


def _claim_concurrently(site, n_agents: int) -> tuple[list, list]:
    barrier = threading.Barrier(n_agents)
    claimed, errors = [], []

    def agent(index: int) -> None:
        try:
            barrier.wait()
            while True:
                job = job_claim(site=site, agent_id=f"agent-{index}")
                if job is None:
                    return
                claimed.append((job.id, f"agent-{index}"))
        except Exception as exc:  # collected: a thread's exception would otherwise vanish
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(n_agents)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return claimed, errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_agents_never_claim_the_same_job(owner, vendor, site):
    task = make_task(owner, quota_per_day=50)
    register_shard(site, task)
    for i in range(N_JOBS):
        submit(vendor, task, name=f"m{i}")

    claimed, errors = _claim_concurrently(site.site, N_AGENTS)

    assert errors == []
    job_ids = [job_id for job_id, _ in claimed]
    assert len(job_ids) == len(set(job_ids)) == N_JOBS
    jobs = Job.objects.filter(site=site.site)
    assert all(job.status == JobStatus.RUNNING and job.attempts == 1 for job in jobs)
    assert {job.id: job.lease_holder for job in jobs} == dict(claimed)


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_through_the_api_never_share_a_job_or_fail(owner, vendor, site):
    from rest_framework.test import APIClient

    task = make_task(owner, quota_per_day=50)
    register_shard(site, task)
    for i in range(N_JOBS):
        submit(vendor, task, name=f"m{i}")
    barrier = threading.Barrier(N_AGENTS)
    answers, errors = [], []

    def agent(index: int) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {site.token}")
        try:
            barrier.wait()
            for _ in range(N_JOBS + 1):
                response = client.post("/api/v1/agent/jobs/claim", {"agent_id": f"agent-{index}"})
                answers.append(
                    (
                        response.status_code,
                        response.json()["job"]["id"] if response.status_code == 200 else None,
                    )
                )
                if response.status_code != 200:
                    return
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(N_AGENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert {status for status, _ in answers} <= {200, 204}
    job_ids = [job_id for status, job_id in answers if status == 200]
    assert len(job_ids) == len(set(job_ids)) == N_JOBS
    assert Job.objects.filter(status=JobStatus.RUNNING).count() == N_JOBS


@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql", reason="SKIP LOCKED is PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_claim_skips_a_job_locked_by_another_transaction_without_waiting(owner, vendor, site):
    """A claim in flight holds its row; a second agent takes the next job instead of queueing."""
    task = make_task(owner, quota_per_day=50)
    register_shard(site, task)
    first, second = submit(vendor, task, name="a"), submit(vendor, task, name="b")
    locked, release, outcome = threading.Event(), threading.Event(), {}
    first_job = Job.objects.get(submission=first)

    def holder() -> None:
        from django.db import transaction

        try:
            with transaction.atomic():
                Job.objects.select_for_update().get(id=first_job.id)
                locked.set()
                release.wait(timeout=30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert locked.wait(timeout=10)
        job = job_claim(site=site.site, agent_id="agent-2")
        outcome["job"] = job
    finally:
        release.set()
        thread.join(timeout=30)
    assert outcome["job"].submission_id == second.id
    assert Job.objects.get(id=first_job.id).status == JobStatus.QUEUED
