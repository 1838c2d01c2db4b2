"""Label recovery from one round of federated fine-tuning: a hostile trainable model + a decoder.

    python benchmarks/federated_label_recovery.py [--json out.json]

The vendor uploads a TorchScript model that honours the contract (forward returns class
probabilities) but routes each row to its own "slot": a hash of the row's features picks one of
``S`` rows of a parameter table, whose entries are the row's logits. The gradient of the loss for
a row then lands only in its slot, and equals ``p - onehot(y)``: its most negative entry is the
row's label. The decoder reads the aggregated update of ONE round (what the vendor can download:
the offset ``D_1``) and, for every training row (the benchmark knows the features to compute the
slot; the vendor would use its own guesses), predicts the label as the argmax of the slot (the update is ``-lr x gradient``).

Three sites (122, 122 and 121 rows, 3 classes, 8 features, synthetic), secure aggregation (the
hub sees only the sum: 20-bit quantization, the real ``quantize_stochastic``/``dequantize``),
one round, run through the runner's own trainer (``evaluator.runner.train.TorchScriptTrainer``,
the code the sandbox runs) and the agent's own ``prepare_site_update``.

- before: the previous task defaults (no DP: ``fl_noise_multiplier`` 0, clip 1.0 on the update,
  plain minibatch SGD, batch 32).
- after: the new defaults (record-level DP-SGD, sigma 2.0, per-row clip 1.0, Poisson sampling at
  q = 32 / (0.8 x the smallest site's rows), the same update clip).

- after, calibrated (``--calibrate EPS ROUNDS``, default 8 50): sigma chosen by
  ``evaluator.privacy.calibration.noise_multiplier_for`` so that ROUNDS rounds spend exactly EPS
  (what the accuracy benchmark does), so one round costs less than at the fixed sigma 2.0.
- after, FedSGD recipe (session 5's accuracy recipe): one full-batch DP-SGD step per site per
  round (q = 1, the exact Gaussian-DP accountant), sigma calibrated to the same EPS over ROUNDS,
  and under secure aggregation each site adds only its share ``sigma / sqrt(t)`` (t = 2 of 3, the
  default threshold; ``evaluator.privacy.distributed``): the released sum carries
  ``sigma sqrt(3 / 2)``, never less than the sigma that is charged.

Chance is 1/3 of the rows; the table reports recovered labels, chance, and the one-sided binomial
p-value of doing better than chance, next to the most any decoder can recover under the round's
guarantee (``label_guess_bound``).

``--whole-run ROUNDS [--epsilons 1 2 4 8]``: the attacker who reads the whole run, not one round:
the decoder on the sum of all ROUNDS rounds' released updates (what the final offset holds), with a
model whose gradient is the same every round (``SteadySlotModel``), the FedSGD recipe calibrated so
that ROUNDS rounds spend each epsilon. The per-round cap bounds one round; this is what the whole
run's epsilon lets through.

``--fedsgd-rounds 50 100 200 400``: the FedSGD recipe's row for each planned number of rounds
at the same EPS (sigma calibrated over each; more rounds, more noise per round), with each seed's
excess over chance, the count pooled over the seeds and its one-sided binomial p-value, and the
decoder's expected excess (``expected_recovery``: the slot's update is ``e_y - 1/3`` plus the
sum's noise, in units of the per-row clip, so P(correct) = E[Phi((1 + s z) / s)^2], s the sum's
noise multiplier).
"""

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

K = 3
N_FEATURES = 8
SLOTS = 16384
SITE_ROWS = (122, 122, 121)
DEFAULT_SIGMA = 2.0  # marketplace.catalog.models.Task.fl_noise_multiplier's default


class SlotModel(nn.Module):
    """Each row's logits are one row of ``table``, picked by a hash of the features."""

    __constants__ = ["n_slots"]

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.n_slots = SLOTS
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(N_FEATURES, generator=g))
        self.table = nn.Parameter(torch.zeros(SLOTS, K))

    @torch.jit.export
    def slot(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.frac(torch.abs((x * self.proj).sum(1)) * 7919.0)
        return torch.clamp((h * self.n_slots).long(), 0, self.n_slots - 1)

    @torch.jit.export
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[self.slot(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


class SteadySlotModel(SlotModel):
    """The slot model for an attacker who reads the whole run: its logits are always 0
    (``table - table.detach()``), so every round's gradient of a row is the same ``1/3 - onehot(y)``
    whatever the rounds before did, and the rounds' updates add up in the row's slot."""

    @torch.jit.export
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.table[self.slot(x)]
        return rows - rows.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


def build_model(path: Path, seed: int = 0, steady: bool = False) -> None:
    torch.jit.save(torch.jit.script(SteadySlotModel(seed) if steady else SlotModel(seed)), str(path))


def make_sites(seed: int = 1):
    rng = np.random.default_rng(seed)
    sites = []
    for n in SITE_ROWS:
        x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
        y = rng.integers(0, K, size=n).astype(np.int64)
        sites.append((x, y))
    return sites


def one_round(
    model_path: Path, sites, *, dp: dict | None, clip_norm: float = 1.0, bits: int = 20, seed: int = 2
):
    """The aggregated update of one secure-aggregation round (what the vendor learns as D_1)."""
    from evaluator.federated.client_update import prepare_site_update
    from evaluator.federated.updates import dequantize, quantization_range
    from evaluator.runner.train import TorchScriptTrainer

    rng = np.random.default_rng(seed)
    vectors = []
    for x, y in sites:
        trainer = TorchScriptTrainer(model_path)
        old = trainer.get_weights()
        config = {"local_epochs": 1, "batch_size": 32, "learning_rate": 0.5, "proximal_mu": 0.0,
                  "seed": int(rng.integers(2**31)), "dp": dp}  # fmt: skip
        trainer.train(x, y, config)
        vector, _ = prepare_site_update(old_weights=old, new_weights=trainer.get_weights(), clip_norm=clip_norm,
                                        noise_multiplier=0.0, n_sites=len(sites), rng=rng, quantization_bits=bits)  # fmt: skip
        vectors.append(vector)
    total = np.sum(np.stack(vectors).astype(np.uint64), axis=0) % np.uint64(2**32)
    return dequantize(total.astype(np.uint32), clip_norm=quantization_range(clip_norm, 0.0), bits=bits,
                      n_summed=len(sites))  # fmt: skip


def decode(model_path: Path, update: np.ndarray, sites) -> tuple[int, int]:
    """Rows whose label is the argmax of their slot in the update; and how many rows there are."""
    module = torch.jit.load(str(model_path))
    table = update.reshape(SLOTS, K)  # the only trainable tensor
    hits = rows = 0
    for x, y in sites:
        slots = module.slot(torch.from_numpy(x)).numpy()
        guess = table[slots].argmax(1)  # the update is -lr * (p - onehot): largest at the label
        hits += int((guess == y).sum())
        rows += len(y)
    return hits, rows


def binomial_p_value(hits: int, n: int, p: float) -> float:
    """P(X >= hits) for X ~ Binomial(n, p)."""
    from scipy.stats import binom

    return float(binom.sf(hits - 1, n, p))


def label_guess_bound(epsilon: float, delta: float, n_classes: int = K) -> float:
    """``evaluator.privacy.label_inference.label_guess_bound`` for this benchmark's classes."""
    from evaluator.privacy.label_inference import label_guess_bound as bound

    return bound(epsilon, delta, n_classes)


def replay(dp: dict | None, seed: int = 2) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slot.pt"
        build_model(path)
        sites = make_sites()
        hits, rows = decode(path, one_round(path, sites, dp=dp, seed=seed), sites)
    return {
        "recovered": hits,
        "rows": rows,
        "chance": rows / K,
        "p_value_vs_chance": binomial_p_value(hits, rows, 1 / K),
    }


def expected_recovery(sigma_sum: float) -> float:
    """P(the decoder names a row's label) when the row's slot holds ``e_y - 1/3`` (the gradient of
    a uniform prediction, norm 0.82 < C, unclipped) plus N(0, sigma_sum^2) per entry (K = 3):
    P = E_z[Phi((1 + sigma_sum z) / sigma_sum)^2], z ~ N(0, 1) (the label's entry beats both others)."""
    from scipy.stats import norm

    z = np.linspace(-12.0, 12.0, 48001)
    weights = norm.pdf(z) * (z[1] - z[0])
    return float(np.sum(weights * norm.cdf((1 + sigma_sum * z) / sigma_sum) ** (K - 1)))


def pooled(runs: list[dict]) -> dict:
    """Hits summed over the seeds, against chance over all their rows."""
    hits, rows = sum(r["recovered"] for r in runs), sum(r["rows"] for r in runs)
    return {"recovered": hits, "rows": rows, "chance": rows / K, "excess": hits - rows / K,
            "p_value_vs_chance": binomial_p_value(hits, rows, 1 / K)}  # fmt: skip


def recovery_summary(runs: list[dict], expected: float, bound: float) -> dict:
    """Each replay's excess over chance, the pooled count, and the formula's expectation."""
    rows = runs[0]["rows"]
    return {"expected_excess_per_seed": rows * (expected - 1 / K),
            "excess_per_seed": [r["recovered"] - rows / K for r in runs], "pooled": pooled(runs),
            "bound_fraction": bound}  # fmt: skip


def summary_text(row: dict) -> str:
    both = row["pooled"]
    return (f"excess per seed {[round(e, 1) for e in row['excess_per_seed']]} (expected "
            f"{row['expected_excess_per_seed']:.1f}); pooled {both['recovered']} of {both['rows']} (chance "
            f"{both['chance']:.1f}, excess {both['excess']:+.1f}, p {both['p_value_vs_chance']:.3g})")  # fmt: skip


def calibrated_sigma(epsilon: float, rounds: int) -> float:
    from evaluator.privacy.calibration import noise_multiplier_for

    q = min(1.0, 32 / int(min(SITE_ROWS) * 0.8))
    return noise_multiplier_for(epsilon=epsilon, rounds=rounds, sample_rate=q, local_epochs=1, delta=1e-5)


def fedsgd_dp(epsilon: float, rounds: int) -> dict:
    """The FedSGD recipe's round: q 1, one step, each site adding its share of the calibrated sigma."""
    from evaluator.federated.accounting import record_level_epsilon
    from evaluator.privacy.calibration import noise_multiplier_for
    from evaluator.privacy.distributed import site_noise_share

    sigma = noise_multiplier_for(epsilon=epsilon, rounds=rounds, sample_rate=1.0, local_epochs=1, delta=1e-5)
    dp = {"example_clip_norm": 1.0, "noise_multiplier": site_noise_share(sigma, len(SITE_ROWS) // 2 + 1),
          "sample_rate": 1.0, "steps": 1}  # fmt: skip
    one = record_level_epsilon(rounds=1, noise_multiplier=sigma, sample_rate=1.0, local_epochs=1, delta=1e-5)
    return {**dp, "epsilon_one_round": one, "sigma_charged": sigma}


def fedsgd_sweep(epsilon: float, rounds_list: list[int], seeds: int) -> dict:
    """Label recovery of the FedSGD recipe for each planned number of rounds at ``epsilon``."""
    threshold = len(SITE_ROWS) // 2 + 1
    rows = sum(SITE_ROWS)
    out = {}
    for rounds in rounds_list:
        dp = fedsgd_dp(epsilon, rounds)
        eps, sigma = dp.pop("epsilon_one_round"), dp.pop("sigma_charged")
        sigma_sum = dp["noise_multiplier"] * math.sqrt(len(SITE_ROWS))
        runs = [replay(dp, seed=s) for s in range(seeds)]
        expected = expected_recovery(sigma_sum)
        out[rounds] = {"sigma": sigma, "site_share": dp["noise_multiplier"], "threshold": threshold,
                       "sigma_sum": sigma_sum, "epsilon_one_round": eps,
                       "expected_pooled_z": seeds * rows * (expected - 1 / K) / math.sqrt(seeds * rows * (1 / K) * (1 - 1 / K)),
                       "p_values": [r["p_value_vs_chance"] for r in runs],
                       **recovery_summary(runs, expected, label_guess_bound(eps, 1e-5))}  # fmt: skip
        row = out[rounds]
        print(f"FedSGD, eps {epsilon:g} over {rounds} rounds: sigma {sigma:.3f} (share {row['site_share']:.3f}, sum "
              f"{sigma_sum:.3f}), one-round eps {eps:.3f}; {summary_text(row)}; expected z "
              f"{row['expected_pooled_z']:.2f}", flush=True)  # fmt: skip
    return out


def whole_run_replay(dp: dict, rounds: int, seed: int) -> dict:
    """The decoder on the sum of every round's released update: what a vendor holds once a run of
    ``rounds`` rounds is over (the final offset is that sum, up to the server's momentum, which is
    linear and known). The model is ``SteadySlotModel``, so the rounds need not be chained."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "steady-slot.pt"
        build_model(path, steady=True)
        sites = make_sites()
        total = sum(one_round(path, sites, dp=dp, seed=seed * 100_003 + r) for r in range(rounds))
        hits, rows = decode(path, total, sites)
    return {"recovered": hits, "rows": rows, "p_value_vs_chance": binomial_p_value(hits, rows, 1 / K)}


def whole_run_sweep(epsilons: list[float], rounds: int, seeds: int) -> dict:
    """Label recovery from the whole run's updates, the FedSGD recipe calibrated to each epsilon."""
    rows = sum(SITE_ROWS)
    out = {}
    for epsilon in epsilons:
        dp = fedsgd_dp(epsilon, rounds)
        sigma = dp.pop("sigma_charged")
        dp.pop("epsilon_one_round")
        runs = [whole_run_replay(dp, rounds, seed=s) for s in range(seeds)]
        # The sum of `rounds` rounds carries the per-round sum's noise times sqrt(rounds) around
        # `rounds` times the signal: one release at sigma_sum / sqrt(rounds).
        sigma_sum = dp["noise_multiplier"] * math.sqrt(len(SITE_ROWS))
        expected = expected_recovery(sigma_sum / math.sqrt(rounds))
        out[epsilon] = {"rounds": rounds, "sigma": sigma, "sigma_sum": sigma_sum,
                        **recovery_summary(runs, expected, label_guess_bound(epsilon, 1e-5))}  # fmt: skip
        row = out[epsilon]
        print(f"whole run, eps {epsilon:g} over {rounds} rounds (sigma {sigma:.3f}): {summary_text(row)}; most any "
              f"decoder can expect under eps {epsilon:g}: {row['bound_fraction'] * rows:.1f} of {rows}", flush=True)  # fmt: skip
    return out


def default_dp(sigma: float, q: float | None = None) -> dict:
    from evaluator.federated.accounting import record_level_epsilon, steps_per_round

    q = min(1.0, 32 / int(min(SITE_ROWS) * 0.8)) if q is None else q
    dp = {
        "example_clip_norm": 1.0,
        "noise_multiplier": sigma,
        "sample_rate": q,
        "steps": steps_per_round(1, q),
    }
    dp_eps = record_level_epsilon(rounds=1, noise_multiplier=sigma, sample_rate=q, local_epochs=1, delta=1e-5)
    return {**dp, "epsilon_one_round": dp_eps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--sigma", type=float, default=None, help="default: the task default fl_noise_multiplier"
    )
    parser.add_argument("--calibrate", type=float, nargs=2, default=[8.0, 50], metavar=("EPS", "ROUNDS"))
    parser.add_argument("--fedsgd-rounds", type=int, nargs="+", default=None,
                        help="only the FedSGD recipe, for each planned number of rounds at the calibrate EPS")  # fmt: skip
    parser.add_argument("--whole-run", type=int, default=None, metavar="ROUNDS",
                        help="the decoder on the sum of all ROUNDS rounds' updates, for each --epsilons")  # fmt: skip
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.whole_run:
        result = whole_run_sweep(args.epsilons, args.whole_run, args.seeds)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=str))
        return
    if args.fedsgd_rounds:
        sweep = fedsgd_sweep(args.calibrate[0], args.fedsgd_rounds, args.seeds)
        if args.json:
            args.json.write_text(json.dumps(sweep, indent=1, default=str))
        return
    sigma = args.sigma if args.sigma is not None else DEFAULT_SIGMA
    settings = {
        "before (no DP, old defaults)": None,
        f"after (record-level DP-SGD, sigma {sigma:g})": default_dp(sigma),
    }
    eps_cap, rounds = args.calibrate[0], int(args.calibrate[1])
    calibrated = calibrated_sigma(eps_cap, rounds)
    name = f"after, calibrated (sigma {calibrated:.3f}: eps {eps_cap:g} over {rounds} rounds)"
    settings[name] = default_dp(calibrated)
    fedsgd = fedsgd_dp(eps_cap, rounds)
    settings[f"after, FedSGD recipe (sigma {fedsgd['sigma_charged']:.3f} charged, share "
             f"{fedsgd['noise_multiplier']:.3f} per site; eps {eps_cap:g} over {rounds} rounds)"] = fedsgd  # fmt: skip
    results: dict = {}
    for name, dp in settings.items():
        eps = dp.pop("epsilon_one_round") if dp else math.inf
        if dp:
            dp.pop("sigma_charged", None)
        runs = [replay(dp, seed=s) for s in range(args.seeds)]
        bound = label_guess_bound(eps, 1e-5) if dp else 1.0
        results[name] = {"dp": dp, "epsilon_one_round": eps, "bound_fraction": bound, "runs": runs}
        hits = [r["recovered"] for r in runs]
        rows = runs[0]["rows"]
        pvalues = ", ".join(f"{r['p_value_vs_chance']:.3g}" for r in runs)
        results[name]["pooled"] = both = pooled(runs)
        pvalues += f"; pooled {both['recovered']} of {both['rows']} (excess {both['excess']:+.1f}, p {both['p_value_vs_chance']:.3g})"
        print(f"{name}: one-round eps {eps:.3f}; recovered {hits} of {rows} (chance {rows / K:.1f}, "
              f"most any decoder can expect under the guarantee {bound * rows:.1f}); p-values vs chance {pvalues}",
              flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
