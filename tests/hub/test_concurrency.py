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
