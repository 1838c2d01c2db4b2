"""A record-level run whose sigma is so small that the next round's epsilon overflows to infinity
still answers its state (JSON has no inf): ``epsilon_after_round`` is null, not a 500."""

import math

from tests.conftest import make_task
from tests.finetuning.conftest import make_parent, sites_for, start_run


def test_the_state_of_a_run_without_a_finite_next_epsilon_is_served(owner, vendor):
    from marketplace.finetuning.models import FineTuningRun
    from marketplace.finetuning.services import privacy_ledger, round_step_noise

    task = make_task(owner, fine_tuning_allowed=True, fl_noise_multiplier=1e-4, fl_epsilon_cap=None)
    sites = sites_for(owner, task, 3)
    run_id = start_run(owner, vendor, make_parent(vendor, task), sites, rounds=2, batch_size=80)
    run = FineTuningRun.objects.get(id=run_id)
    # The premise: this sigma gives no finite epsilon for the next round.
    assert not math.isfinite(privacy_ledger(run).epsilon_if(noise_multiplier=round_step_noise(run, 3)))

    response = sites[0].api.get(f"/api/v1/agent/runs/{run_id}/state")
    assert response.status_code == 200, response.content
    assert response.json()["round_config"]["epsilon_after_round"] is None
