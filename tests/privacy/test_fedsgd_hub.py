"""The hub side of FedSGD record-level runs (issue 10): one accountant, named, on hub and sites.

A record-level run whose batch covers the smallest site's fit rows (q = 1, one step per round)
is accounted with exact Gaussian DP on the hub (ledger, API) and at the sites (the ledger the
site builds from the run the hub sends), is marked for distributed noise under secure
aggregation, and accepts FedAvg's server momentum. Simulated sites drive the real agent API
(tests/finetuning/conftest.py helpers; no Docker).
"""

import pytest

from tests.conftest import make_task
from tests.finetuning.conftest import make_parent, secagg_round, sites_for, start_run, updates_for


@pytest.fixture
def fl_task(owner):
    return make_task(owner, fine_tuning_allowed=True)


def test_a_full_batch_record_level_run_has_one_exact_gdp_epsilon_on_hub_and_sites(owner, vendor, fl_task):
    from evaluator.federated.site import parse_run
    from marketplace.finetuning.models import FineTuningRun
    from marketplace.finetuning.selectors import run_payload_for_job
    from marketplace.jobs.models import Job

    sites = sites_for(owner, fl_task, 3)  # 100 rows each: 80 fit rows, batch 80 -> q = 1
    run_id = start_run(owner, vendor, make_parent(vendor, fl_task), sites, rounds=3, batch_size=80,
                       strategy="fedavg", strategy_params={"server_momentum": 0.9})  # fmt: skip
    run = FineTuningRun.objects.get(id=run_id)
    assert run.dp_sample_rate == 1.0 and run.dp_steps_per_round == 1 and run.dp_distributed
    assert run.privacy_ledger["accountant"] == "gdp"
    privacy = vendor.client.get(f"/api/v1/finetuning-runs/{run_id}").json()["privacy"]
    assert "exact Gaussian DP" in privacy["accountant"]

    spec = parse_run(
        run_payload_for_job(job=Job.objects.get(fl_participant__run=run, fl_participant__number=1))
    )
    site_ledger = spec.new_privacy_ledger(0)
    assert site_ledger.accountant == "gdp"
    for _ in range(2):
        secagg_round(run_id, sites, updates_for(3))
        site_ledger.record_round()
    run.refresh_from_db()
    assert run.rounds_completed == 2
    assert run.epsilon_spent == pytest.approx(site_ledger.epsilon, rel=1e-12)


def test_a_poisson_sampled_run_keeps_rdp_and_local_noise(owner, vendor, fl_task):
    from marketplace.finetuning.models import FineTuningRun

    sites = sites_for(owner, fl_task, 3)
    run_id = start_run(owner, vendor, make_parent(vendor, fl_task), sites, rounds=3, batch_size=20)
    run = FineTuningRun.objects.get(id=run_id)
    assert run.dp_sample_rate < 1 and not run.dp_distributed and run.privacy_ledger["accountant"] == "rdp"
    privacy = vendor.client.get(f"/api/v1/finetuning-runs/{run_id}").json()["privacy"]
    assert "Opacus RDPAccountant" in privacy["accountant"] and "Distributed noise" not in privacy["guarantee"]
