"""FedSGD-style record-level rounds (issue 10): one full-batch DP-SGD step per site, the hub's
example-weighted mean, server momentum, and distributed noise under secure aggregation.

The aggregate must be ``-lr (sum of every site's clipped gradients + every site's noise) / sum n_k``:
one more row anywhere moves it by at most ``lr C / sum n_k``, and with each site adding the share
``sigma / sqrt(t)`` (t the secure aggregation threshold) the noise on a sum of t or more sites has
std at least ``lr sigma C / sum n_k`` -- the central-DP guarantee the accountant charges
(``evaluator.privacy.distributed``).
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from evaluator.federated.strategies import FedAvg, get_strategy
from evaluator.privacy.distributed import applies, contributed_noise_multiplier, site_noise_share
from evaluator.runner.dpsgd import DPConfig, VmapGrads, dp_sgd

LR, C = 0.5, 1.0


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def logits(self, x):
        return self.fc(x)

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=1)


def _sites(seed=0, sizes=(30, 20, 12)):
    rng = np.random.default_rng(seed)
    return [(rng.normal(0, 5, (n, 4)).astype(np.float32), rng.integers(0, 3, n)) for n in sizes]


def _aggregate(sites, *, sigma, seed, threshold=None):
    """One FedSGD round as the agent and hub run it: each site's full-batch DP-SGD step
    (``dp_sgd`` at q 1, one step, its share of the noise), weighted by n_k / cap; the hub divides
    the sum by sum(n_k) / cap."""
    torch.manual_seed(0)
    model = Net()
    names = sorted(n for n, _ in model.named_parameters())
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = VmapGrads(model, names)
    cap = max(len(y) for _, y in sites)
    share = site_noise_share(sigma, threshold or len(sites))
    total = None
    for k, (x, y) in enumerate(sites):
        config = DPConfig(example_clip_norm=C, noise_multiplier=share, sample_rate=1.0, steps=1)
        new = dp_sgd(grads, params, names, x, y, config=config, learning_rate=LR, batch_size=float(len(y)),
                     rng=np.random.default_rng([seed, k]))  # fmt: skip
        delta = torch.cat([(new[n] - params[n]).reshape(-1).double() for n in names]) * (len(y) / cap)
        total = delta if total is None else total + delta
    return total / (sum(len(y) for _, y in sites) / cap)


def test_one_more_row_moves_the_fedsgd_aggregate_by_at_most_lr_c_over_all_rows():
    sites = _sites()
    rows = sum(len(y) for _, y in sites)
    base = _aggregate(sites, sigma=0.0, seed=1)
    for k in range(len(sites)):
        x, y = sites[k]
        extra = (np.concatenate([x, 100 * np.ones((1, 4), np.float32)]), np.concatenate([y, [2]]))
        # the denominator is the site's public row count: compare at the same counts
        grown = [extra if j == k else s for j, s in enumerate(sites)]
        shrunk_rows = rows + 1
        moved = _aggregate(grown, sigma=0.0, seed=1) - base * rows / shrunk_rows
        assert float(torch.linalg.vector_norm(moved)) <= LR * C / shrunk_rows * (1 + 1e-6)
        assert float(torch.linalg.vector_norm(moved)) >= 0.99 * LR * C / shrunk_rows  # clipped to exactly C


@pytest.mark.parametrize("threshold", [3, 2])
def test_the_shares_of_the_sites_add_up_to_at_least_sigma_on_the_aggregate(threshold):
    sites, sigma = _sites(), 3.0
    rows = sum(len(y) for _, y in sites)
    clean = _aggregate(sites, sigma=0.0, seed=0)
    noise = torch.stack(
        [_aggregate(sites, sigma=sigma, seed=s, threshold=threshold) - clean for s in range(1, 121)]
    )
    # central DP's noise (times sqrt(n / t) when all n sites are in), not sqrt(n) times it as with local DP
    expected = LR * sigma * C / rows * math.sqrt(len(sites) / threshold)
    assert float(noise.std()) == pytest.approx(expected, rel=0.05)


def test_distributed_noise_applies_only_to_one_linear_step_under_secure_aggregation():
    assert applies(secure_aggregation=True, sample_rate=1.0, local_epochs=1)
    assert not applies(secure_aggregation=False, sample_rate=1.0, local_epochs=1)
    assert not applies(secure_aggregation=True, sample_rate=0.5, local_epochs=1)  # two steps per round
    assert not applies(secure_aggregation=True, sample_rate=1.0, local_epochs=2)
    assert site_noise_share(4.0, 4) == 2.0
    assert contributed_noise_multiplier(4.0, 3, 4) == pytest.approx(
        4.0 * math.sqrt(4 / 3)
    )  # all 4 honest, t 3
    assert contributed_noise_multiplier(4.0, 3, 2) == pytest.approx(4.0 * math.sqrt(2 / 3))  # only 2 honest
    with pytest.raises(ValueError):
        site_noise_share(1.0, 0)


def test_server_momentum_is_heavy_ball_on_the_mean_update_and_survives_the_hub_restoring_it():
    rng = np.random.default_rng(0)
    w = rng.normal(size=5)
    updates = [rng.normal(size=5) for _ in range(4)]
    plain = get_strategy("fedavg", learning_rate=1.0, local_epochs=1, server_momentum=0.0)
    assert np.allclose(plain.aggregate(w, updates[0], 3), w + updates[0])  # default: unchanged FedAvg
    expected, m = w.copy(), np.zeros(5)
    got = w.copy()
    state = None
    for d in updates:
        m = 0.9 * m + d
        expected = expected + 0.5 * m
        server = FedAvg(server_learning_rate=0.5, server_momentum=0.9)  # the hub builds it afresh per round
        if state is not None:
            server.load_state_dict(state)
        got = server.aggregate(got, d, 3)
        state = server.state_dict()
    assert np.allclose(got, expected)
    with pytest.raises(ValueError):
        FedAvg(server_momentum=1.0)


# --- the site agent: the hub asks for distributed noise, the site checks it applies -----------

RECORD_RUN = {
    "id": 4, "participant": 1, "n_participants": 4, "rounds": 50, "local_epochs": 1, "batch_size": 700,
    "learning_rate": 3.0, "strategy": "fedavg", "proximal_mu": 0.0, "secure_aggregation": True,
    "threshold": 3, "clip_norm": 10.0, "noise_multiplier": 0.0, "dp_delta": 1e-5, "epsilon_cap": 8.0,
    "quantization_bits": 20, "round_timeout_seconds": 120, "privacy_unit": "record",
    "dp": {"example_clip_norm": 1.0, "noise_multiplier": 4.244, "sample_rate": 1.0, "steps": 1, "distributed": True},
}  # fmt: skip


def _runner_dp(run):
    from types import SimpleNamespace

    from evaluator.federated.site import SiteParticipant, parse_run

    spec = parse_run(run)
    return spec, SiteParticipant._round_config(SimpleNamespace(spec=spec), None)["dp"]


def test_the_site_adds_its_share_and_still_charges_sigma():
    spec, dp = _runner_dp(RECORD_RUN)
    assert dp["noise_multiplier"] == pytest.approx(4.244 / math.sqrt(3)) and "distributed" not in dp
    ledger = spec.new_privacy_ledger(0)  # the site's own accountant charges the sum's sigma
    assert ledger.noise_multiplier == 4.244 and ledger.accountant == "gdp"
    assert ledger.epsilon_if(rounds=50) == pytest.approx(8.0, abs=0.01)
    local = {**RECORD_RUN, "dp": {**RECORD_RUN["dp"], "distributed": False}}
    assert _runner_dp(local)[1]["noise_multiplier"] == 4.244  # local DP: the whole sigma at every site


@pytest.mark.parametrize(
    "change",
    [
        {"secure_aggregation": False, "threshold": None},  # the hub would see this site's update alone
        {"dp": {**RECORD_RUN["dp"], "sample_rate": 0.5, "steps": 2}},  # several steps: not linear
        {"local_epochs": 2, "dp": {**RECORD_RUN["dp"], "steps": 2}},
        {"dp": {**RECORD_RUN["dp"], "distributed": "yes"}},
    ],
)
def test_the_site_refuses_distributed_noise_where_it_does_not_hold(change):
    from evaluator.federated.site import SiteRunError, parse_run

    with pytest.raises(SiteRunError) as caught:
        parse_run({**RECORD_RUN, **change})
    assert caught.value.reason == "policy_violation" and "distributed" in str(caught.value)


def test_the_site_uses_the_accountant_the_hub_names_so_runs_approved_before_gdp_keep_rdp():
    spec, dp = _runner_dp({**RECORD_RUN, "dp": {**RECORD_RUN["dp"], "accountant": "rdp"}})
    assert spec.new_privacy_ledger(0).accountant == "rdp" and "accountant" not in dp
    assert _runner_dp(RECORD_RUN)[0].new_privacy_ledger(0).accountant == "gdp"  # not named: gdp at q 1
    from evaluator.federated.site import SiteRunError, parse_run

    subsampled = {"example_clip_norm": 1.0, "noise_multiplier": 4.0, "sample_rate": 0.5, "steps": 2}
    with pytest.raises(SiteRunError):
        parse_run({**RECORD_RUN, "dp": {**subsampled, "accountant": "gdp"}})
