"""The hub's defaults for what a vendor or owner leaves empty in a fine-tuning run (issue 10).

Record-level runs default to the FedSGD recipe measured in BENCHMARKS.md (MNIST-1D, 4 label-skewed
sites, 50 rounds: 0.656 at epsilon 8 with secure aggregation, vs 0.434 with batch 32, lr 5):

- ``batch_size`` = the smallest site's fit rows, so q = 1 and, with ``local_epochs`` 1, every round
  is ONE full-batch DP-SGD step per site: the exact Gaussian-DP accountant applies (6 % less sigma
  than RDP at epsilon 8) and, under secure aggregation, distributed noise (each site sigma/sqrt(t));
- ``learning_rate`` = min(3, 270 / sigma_sum^2), sigma_sum the noise multiplier of the sites' sum
  (sigma sqrt(n/t) with distributed noise, sigma sqrt(n) without): the lr that was best per epsilon
  (3 at epsilon 4-8, 1 at 2, 0.3 at 1 with 4 sites), measured for per-row clip 1 and this shape;
- FedAvg ``server_momentum`` 0.9 (FedAvgM; post-processing of the released sums, no privacy cost);
- sigma, when the owner leaves it empty: calibrated so the planned rounds spend exactly the epsilon
  cap (``evaluator.privacy.calibration``: GDP at q = 1, RDP otherwise), but never less than the
  sigma whose ONE round costs ``ROUND_EPSILON_CAP`` (a per-round cap; issue 10, label recovery).

Why a per-round cap: the vendor picks the rounds, and sigma calibrated to the cap over its rounds
lets a hostile vendor spend the whole cap in one round. The label decoder of
benchmarks/federated_label_recovery.py (365 rows of 3 sites, chance 121.7) names about 251 labels
at epsilon 8 in 1 round (sigma 0.60), 200 in 3, 172 in 10, 136 in 50 (sigma 4.24, one-round
epsilon 0.87; means over 3-10 replays): its excess falls as 1/sigma of ONE round. With ``ROUND_EPSILON_CAP`` 0.6 (sigma >=
5.95 at q = 1) no request leaks more than 100 rounds at epsilon 8 do (+14 rows per 365; a single
365-row replay is on average not significant at 5 %, 10 pooled replays are), and the cap 8 is spent
only over >= 100 rounds, where the MNIST-1D benchmark reaches 0.677 / 0.680 (seeds 0, 1; 50 rounds:
0.651 mean). Tighter caps were measured too (docs/privacy-fine-tuning.md): 0.41 (200 rounds) 0.622
at lr 2, 0.525 at lr 3 (this module derives 2.81); "0 labels beyond chance" pooled over replays
needs sigma ~14 on the sum, whose accuracy was not measured.

Values the vendor or owner sets always win. Every default applied is stored in the run's
``hub_defaults`` with its reason; the portal and the API show them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from evaluator.federated.accounting import steps_per_round
from evaluator.federated.secagg import default_threshold
from evaluator.privacy.calibration import noise_multiplier_for
from evaluator.privacy.distributed import applies as distributed_applies
from marketplace.catalog.models import DataShard, Task
from marketplace.core.errors import Conflict, DomainError
from marketplace.finetuning.models import PrivacyUnit, StrategyName

NON_PRIVATE_BATCH_SIZE = 32
MAX_BATCH_SIZE = 1 << 16  # what the sites accept (evaluator.federated.site); above it q < 1
LOCAL_EPOCHS = 1
MAX_LEARNING_RATE = 3.0  # the best site lr at epsilon 4 and 8 (BENCHMARKS, issue 10)
LR_NOISE_SCALE = 270.0  # lr ~ 270 / sigma_sum^2 below that (1 at epsilon 2, 0.3 at epsilon 1)
SERVER_MOMENTUM = 0.9
HOLDOUT = 0.2  # the sites' validation holdout (evaluator.federated.site)
#: the most one round may cost a record-level run whose sigma the hub calibrates (module doc)
ROUND_EPSILON_CAP = 0.6


def smallest_fit_rows(shards: list[DataShard]) -> int:
    """The smallest site's training rows less the validation holdout, as far as the hub knows them
    (``split_sizes['train']``, else the shard's row count)."""
    rows = []
    for shard in shards:
        train = shard.split_sizes.get("train") if isinstance(shard.split_sizes, dict) else None
        rows.append(int(train) if isinstance(train, int) and train > 0 else int(shard.row_count))
    return max(1, int(min(rows) * (1 - HOLDOUT))) if rows else 1


def task_noise_multiplier(task: Task, *, rounds: int, sample_rate: float, local_epochs: int) -> float | None:
    """The task's sigma, or -- left empty -- the sigma that spends exactly its epsilon cap over
    ``rounds`` rounds (None without a cap: no DP can be derived)."""
    if task.fl_noise_multiplier is not None:
        return float(task.fl_noise_multiplier)
    if task.fl_epsilon_cap is None or task.fl_privacy_unit != PrivacyUnit.RECORD:
        return None  # site-level sigma is the owner's to set (its accountant is per round, not per step)
    try:
        calibrated = noise_multiplier_for(epsilon=float(task.fl_epsilon_cap), rounds=int(rounds),
                                          sample_rate=sample_rate, local_epochs=int(local_epochs),
                                          delta=float(task.fl_dp_delta))  # fmt: skip
        return max(calibrated, round_noise_floor(task, sample_rate=sample_rate, local_epochs=local_epochs))
    except ValueError:
        raise Conflict(
            f"The task's epsilon cap {task.fl_epsilon_cap:g} is too low for {rounds} round(s) at any noise.",
            code="epsilon_cap_too_low",
        ) from None


def round_noise_floor(task: Task, *, sample_rate: float, local_epochs: int) -> float:
    """The sigma whose one round costs ``ROUND_EPSILON_CAP`` (or the task's cap, if lower)."""
    cap = min(ROUND_EPSILON_CAP, float(task.fl_epsilon_cap)) if task.fl_epsilon_cap is not None else ROUND_EPSILON_CAP
    return noise_multiplier_for(epsilon=cap, rounds=1, sample_rate=sample_rate, local_epochs=int(local_epochs),
                                delta=float(task.fl_dp_delta))  # fmt: skip


def sum_noise_multiplier(sigma: float, n_sites: int, *, distributed: bool) -> float:
    """The noise multiplier of the sites' sum (in units of the per-row clip norm)."""
    shares = n_sites / default_threshold(n_sites) if distributed else n_sites
    return sigma * math.sqrt(shares)


def fedsgd_learning_rate(sigma: float, n_sites: int, *, distributed: bool) -> float:
    """The site lr of the FedSGD recipe: min(3, 270 / sigma_sum^2) (module doc)."""
    sigma_sum = sum_noise_multiplier(sigma, n_sites, distributed=distributed)
    if sigma_sum <= 0:
        return MAX_LEARNING_RATE
    return round(min(MAX_LEARNING_RATE, LR_NOISE_SCALE / sigma_sum**2), 4)


@dataclass
class RunSettings:
    """A run's training settings after the hub's defaults, and which defaults were applied."""

    batch_size: int
    local_epochs: int
    learning_rate: float
    strategy_params: dict[str, float]
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)

    def use(self, name: str, value: Any, reason: str) -> Any:
        self.defaults[name] = {"value": value, "reason": reason}
        return value


def run_settings(
    task: Task, shards: list[DataShard], *, rounds: int, batch_size: int | None, local_epochs: int | None,
    learning_rate: float | None, strategy: str, strategy_params: dict[str, Any],
) -> RunSettings:  # fmt: skip
    """Fills what the vendor left empty (None, or a strategy parameter left out)."""
    record = task.fl_privacy_unit == PrivacyUnit.RECORD
    settings = RunSettings(
        batch_size=0, local_epochs=0, learning_rate=0.0, strategy_params=dict(strategy_params)
    )
    if local_epochs is None:
        local_epochs = settings.use("local_epochs", LOCAL_EPOCHS, "one pass per round (one full-batch DP-SGD step "
                                    "when record-level)" if record else "one pass per round")  # fmt: skip
    if batch_size is None:
        if record and shards:
            batch_size = settings.use(
                "batch_size", min(smallest_fit_rows(shards), MAX_BATCH_SIZE),
                "record-level: the smallest site's fit rows, so q = 1 and each round is one full-batch DP-SGD "
                "step (exact GDP accountant; distributed noise under secure aggregation)",
            )  # fmt: skip
        else:
            batch_size = settings.use("batch_size", NON_PRIVATE_BATCH_SIZE, "the hub's default mini-batch")
    fit = smallest_fit_rows(shards) if shards else 1
    q = min(1.0, batch_size / fit)
    full_batch = steps_per_round(local_epochs, q) == 1
    if learning_rate is None:
        if not record:
            raise DomainError("learning_rate is required (the hub derives it only for record-level runs).",
                              code="invalid_run", details={"learning_rate": ["required"]})  # fmt: skip
        sigma = task_noise_multiplier(task, rounds=rounds, sample_rate=q, local_epochs=local_epochs) or 0.0
        distributed = distributed_applies(secure_aggregation=task.fl_secure_aggregation, sample_rate=q,
                                          local_epochs=local_epochs)  # fmt: skip
        sigma_sum = sum_noise_multiplier(sigma, max(1, len(shards)), distributed=distributed)
        learning_rate = settings.use(
            "learning_rate", fedsgd_learning_rate(sigma, max(1, len(shards)), distributed=distributed),
            f"min(3, 270 / σ_sum²) with σ_sum {sigma_sum:.3g} (σ {sigma:.3g} per step, {len(shards)} sites, "
            f"{'distributed' if distributed else 'local'} noise): the best lr per ε in BENCHMARKS (issue 10)",
        )  # fmt: skip
    if record and full_batch and strategy == StrategyName.FEDAVG and "server_momentum" not in strategy_params:
        settings.strategy_params["server_momentum"] = settings.use(
            "strategy_params.server_momentum", SERVER_MOMENTUM,
            "FedSGD rounds: server momentum 0.9 makes each of the noisy full-batch steps count "
            "(ε 8: 0.656 vs 0.434 without the recipe, BENCHMARKS)",
        )  # fmt: skip
    settings.batch_size, settings.local_epochs, settings.learning_rate = (
        int(batch_size),
        int(local_epochs),
        float(learning_rate),
    )
    return settings
