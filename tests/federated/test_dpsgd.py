"""Record-level DP-SGD (evaluator/runner/dpsgd.py) and its accountant, in process.

Sensitivity: one more row changes the released weights by exactly ``lr * C / B`` when its
gradient is above the clip bound, never more. Noise: std ``sigma * C / B`` per coordinate per
step. The TorchScript path (microbatches of one, state checked) gives the same weights as the
``torch.func`` path on the same module. The accountant matches the closed forms.
"""

import math
from typing import List  # noqa: UP035 - TorchScript needs typing.List

import numpy as np
import pytest
import torch
from torch import nn

from evaluator.federated.accounting import (
    ORDERS,
    PrivacyLedger,
    record_level_epsilon,
    record_level_ledger,
    steps_per_round,
)
from evaluator.runner.dpsgd import (
    DPConfig,
    PolicyViolation,
    ScriptGrads,
    VmapGrads,
    check_script_ops,
    dp_sgd,
    noisy_mean,
    poisson_batches,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(x), dim=1)


class NetWithLogits(Net):
    @torch.jit.export
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=n).astype(np.int64)
    return x, y


def _params(module):
    names = sorted(n for n, _ in module.named_parameters())
    owned = dict(module.named_parameters())
    return names, {n: owned[n].detach().clone() for n in names}


def _flat(params, names):
    return torch.cat([params[n].reshape(-1).double() for n in names])


def _train(module, x, y, *, sigma=0.0, q=1.0, steps=1, clip=0.5, lr=0.1, batch=8, seed=1, script=False):
    names, params = _params(module)
    grads = ScriptGrads(module, names) if script else VmapGrads(module, names)
    config = DPConfig(example_clip_norm=clip, noise_multiplier=sigma, sample_rate=q, steps=steps)
    out = dp_sgd(grads, params, names, x, y, config=config, learning_rate=lr, batch_size=batch,
                 rng=np.random.default_rng(seed))  # fmt: skip
    return _flat(out, names)


def test_one_extra_row_moves_the_released_weights_by_exactly_lr_c_over_b():
    torch.manual_seed(0)
    module = Net()
    x, y = _data()
    outlier = np.full((1, 4), 50.0, dtype=np.float32)  # its gradient norm is far above C
    base = _train(module, x, y)
    more = _train(module, np.vstack([x, outlier]), np.append(y, 0))
    assert float(torch.linalg.vector_norm(more - base)) == pytest.approx(0.1 * 0.5 / 8, abs=1e-7)  # float32 weights


def test_a_row_below_the_clip_bound_moves_the_weights_by_its_own_gradient_only():
    torch.manual_seed(0)
    module = Net()
    x, y = _data()
    base = _train(module, x, y, clip=1e6)
    more = _train(module, np.vstack([x, x[:1] * 0.01]), np.append(y, y[0]), clip=1e6)
    assert 0 < float(torch.linalg.vector_norm(more - base)) < 0.1 * 1e6 / 8


def test_no_row_moves_the_weights_by_more_than_the_bound_whatever_its_value():
    torch.manual_seed(0)
    module = Net()
    x, y = _data()
    base = _train(module, x, y)
    for scale in (1e-3, 1.0, 1e3, 1e30):
        more = _train(module, np.vstack([x, np.full((1, 4), scale, np.float32)]), np.append(y, 2))
        assert float(torch.linalg.vector_norm(more - base)) <= 0.1 * 0.5 / 8 + 1e-7


def test_noise_per_step_has_std_sigma_c_over_b():
    config = DPConfig(example_clip_norm=2.0, noise_multiplier=1.5, sample_rate=0.1, steps=1)
    noise = noisy_mean(None, config, 4.0, np.random.default_rng(0), 200_000).numpy()
    assert noise.mean() == pytest.approx(0.0, abs=0.01)
    assert noise.std() == pytest.approx(1.5 * 2.0 / 4.0, rel=0.01)


def test_poisson_batches_include_each_row_with_probability_q():
    sizes = [len(b) for b in poisson_batches(1000, 0.05, 400, np.random.default_rng(0))]
    assert np.mean(sizes) == pytest.approx(50, rel=0.03)
    assert np.std(sizes) == pytest.approx(math.sqrt(1000 * 0.05 * 0.95), rel=0.15)  # binomial, not fixed


@pytest.mark.parametrize("cls", [Net, NetWithLogits])
def test_the_torchscript_path_gives_the_same_weights_as_torch_func(cls):
    torch.manual_seed(3)
    module = cls()
    scripted = torch.jit.script(module)
    x, y = _data(60)
    eager = _train(module, x, y, sigma=1.0, q=0.2, steps=5, seed=7)
    script = _train(scripted, x, y, sigma=1.0, q=0.2, steps=5, seed=7, script=True)
    assert torch.allclose(eager, script, atol=1e-5)


def test_the_loss_has_a_gradient_at_saturation_when_the_model_exports_logits():
    module = NetWithLogits()
    with torch.no_grad():
        module.fc.weight.zero_()
        module.fc.bias.copy_(torch.tensor([200.0, 0.0, 0.0]))  # p(class 1) underflows to 0
    scripted = torch.jit.script(module)
    x, y = _data(4)
    y[:] = 1
    names, params = _params(scripted)
    grads = ScriptGrads(scripted, names)(params, torch.from_numpy(x), torch.from_numpy(y))
    assert float(torch.linalg.vector_norm(grads)) > 1.0


class KeepsState(nn.Module):
    seen: List[torch.Tensor]  # noqa: UP006 - TorchScript

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.seen = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return torch.softmax(self.fc(x), dim=1)


class ReadsFiles(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.from_file("/etc/hostname", False, 1, dtype=torch.uint8)
        return torch.softmax(self.fc(x) + 0 * rows.float().sum(), dim=1)


def test_a_model_that_keeps_state_across_examples_is_a_policy_violation():
    scripted = torch.jit.script(KeepsState())
    names, params = _params(scripted)
    x, y = _data(3)
    with pytest.raises(PolicyViolation, match="changed its own"):
        ScriptGrads(scripted, names)(params, torch.from_numpy(x), torch.from_numpy(y))


def test_a_model_that_reads_files_is_refused_before_it_trains():
    with pytest.raises(PolicyViolation, match="aten::from_file"):
        check_script_ops(torch.jit.script(ReadsFiles()))


def test_dp_config_refuses_bad_values():
    for bad in ({}, {"example_clip_norm": 0, "noise_multiplier": 1, "sample_rate": 0.1, "steps": 1},
                {"example_clip_norm": 1, "noise_multiplier": -1, "sample_rate": 0.1, "steps": 1},
                {"example_clip_norm": 1, "noise_multiplier": 1, "sample_rate": 1.5, "steps": 1},
                {"example_clip_norm": 1, "noise_multiplier": 1, "sample_rate": 0.1, "steps": 0}):  # fmt: skip
        with pytest.raises(ValueError):
            DPConfig.parse(bad)


# --- the accountant -------------------------------------------------------------------------


def _balle(rdp_of_alpha, delta, orders):
    return min(
        rdp_of_alpha(a) + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1) for a in orders
    )


def test_full_batch_steps_compose_to_the_closed_form_gaussian_rdp():
    sigma, steps, delta = 4.0, 30, 1e-5
    ledger = PrivacyLedger(delta=delta, noise_multiplier=sigma, sample_rate=1.0, steps_per_round=steps)
    expected = _balle(lambda a: steps * a / (2 * sigma**2), delta, ORDERS)
    assert ledger.epsilon_if(rounds=2) == pytest.approx(_balle(lambda a: 2 * steps * a / (2 * sigma**2), delta, ORDERS))
    assert ledger.epsilon_if(rounds=1) == pytest.approx(expected, rel=1e-9)


def test_poisson_subsampled_steps_match_the_binomial_expansion_at_integer_orders():
    sigma, q, steps, delta = 1.0, 0.05, 200, 1e-5

    def rdp(a):  # Mironov, Talwar, Zhang 2019, integer alpha: log A_alpha / (alpha - 1)
        a = int(a)
        terms = [
            math.log(math.comb(a, k)) + (a - k) * math.log(1 - q) + k * math.log(q) + (k * k - k) / (2 * sigma**2)
            for k in range(a + 1)
        ]
        top = max(terms)
        return steps * (top + math.log(sum(math.exp(t - top) for t in terms))) / (a - 1)

    integer_orders = [a for a in ORDERS if float(a).is_integer() and a <= 64]
    by_hand = _balle(rdp, delta, integer_orders)
    ledger = PrivacyLedger(delta=delta, noise_multiplier=sigma, sample_rate=q, steps_per_round=steps)
    eps = ledger.epsilon_if(rounds=1)
    assert eps <= by_hand + 1e-9  # fractional orders can only do better
    assert eps == pytest.approx(by_hand, rel=0.05)


def test_record_level_ledger_counts_local_epochs_times_one_over_q_steps_per_round():
    assert steps_per_round(2, 0.05) == 40
    assert steps_per_round(1, 0.3) == 4
    ledger = record_level_ledger(noise_multiplier=1.0, sample_rate=0.05, local_epochs=2, delta=1e-5)
    ledger.record_round()
    ledger.record_round()
    assert ledger.history == [(1.0, 0.05, 80)] and ledger.rounds == 2
    assert ledger.epsilon == pytest.approx(
        record_level_epsilon(rounds=2, noise_multiplier=1.0, sample_rate=0.05, local_epochs=2, delta=1e-5)
    )
    again = PrivacyLedger.from_dict(ledger.to_dict())
    assert again.epsilon == ledger.epsilon and again.steps_per_round == 40
