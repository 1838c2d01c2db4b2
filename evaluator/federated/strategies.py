"""Server strategies: what each site is told per round, and how the aggregate moves the model.

Every strategy takes the aggregated update -- the mean of the sites' deltas ``new - old`` -- so
it works the same with secure aggregation (the hub only learns the sum; divide by the number of
contributing sites with ``mean_update``) and without (robust rules in ``robust`` give a mean-like
vector too). Strategies with state (FedAdam) expose ``state_dict``/``load_state_dict`` so the hub
can persist them between rounds.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np


def mean_update(update_sum: np.ndarray, n_sites: int) -> np.ndarray:
    """The mean delta from a sum of ``n_sites`` deltas (what secure aggregation yields)."""
    if n_sites < 1:
        raise ValueError("n_sites must be >= 1")
    return np.asarray(update_sum, dtype=np.float64) / n_sites


class Strategy:
    """Base class: a round's client configuration and the server update rule."""

    name: ClassVar[str] = ""

    def __init__(
        self, *, learning_rate: float = 0.01, local_epochs: int = 1, server_learning_rate: float = 1.0
    ):
        if learning_rate <= 0 or local_epochs < 1 or server_learning_rate <= 0:
            raise ValueError("learning rates must be > 0 and local_epochs >= 1")
        self.learning_rate = learning_rate
        self.local_epochs = local_epochs
        self.server_learning_rate = server_learning_rate

    def configure_round(self, round_number: int, global_weights: np.ndarray) -> dict[str, Any]:
        """What every site gets for this round (the global weights travel separately)."""
        return {
            "strategy": self.name,
            "round": round_number,
            "learning_rate": self.learning_rate,
            "local_epochs": self.local_epochs,
        }

    def aggregate(
        self, global_weights: np.ndarray, aggregated_update: np.ndarray, n_sites: int
    ) -> np.ndarray:
        """New global weights from the current ones and the mean site update."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    @staticmethod
    def _check(
        global_weights: np.ndarray, aggregated_update: np.ndarray, n_sites: int
    ) -> tuple[np.ndarray, np.ndarray]:
        w = np.asarray(global_weights, dtype=np.float64)
        d = np.asarray(aggregated_update, dtype=np.float64)
        if w.shape != d.shape or w.ndim != 1:
            raise ValueError(f"weights {w.shape} and update {d.shape} must be flat vectors of one shape")
        if n_sites < 1:
            raise ValueError("no site contributed to this round")
        if not np.all(np.isfinite(d)):
            raise ValueError("aggregated update has non-finite values")
        return w, d


_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"strategy name {cls.name!r} is empty or taken")
    _REGISTRY[cls.name] = cls
    return cls


def strategy_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_strategy(name: str, **params: Any) -> Strategy:
    """Build a registered strategy by name (``fedavg``, ``fedprox``, ``fedadam``)."""
    try:
        cls = _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(strategy_names())}") from None
    return cls(**params)


@register_strategy
class FedAvg(Strategy):
    """McMahan et al. 2017: ``w <- w + eta_server * mean_delta`` (eta_server = 1 is plain averaging).

    ``server_momentum`` mu > 0 is FedAvgM (Hsu et al. 2019): ``m <- mu m + mean_delta``,
    ``w <- w + eta_server m``. With one full-batch DP-SGD step per round (FedSGD) it is server-side
    heavy-ball SGD on the noisy gradient: post-processing, no privacy cost (issue 10).
    """

    name = "fedavg"

    def __init__(self, *, server_momentum: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        if not 0 <= server_momentum < 1:
            raise ValueError("server_momentum must be in [0, 1)")
        self.server_momentum = server_momentum
        self.m: np.ndarray | None = None

    def aggregate(
        self, global_weights: np.ndarray, aggregated_update: np.ndarray, n_sites: int
    ) -> np.ndarray:
        w, d = self._check(global_weights, aggregated_update, n_sites)
        if self.server_momentum:
            self.m = d if self.m is None or self.m.shape != d.shape else self.server_momentum * self.m + d
            d = self.m
        return w + self.server_learning_rate * d

    def state_dict(self) -> dict[str, Any]:
        return {"m": None if self.m is None else self.m.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m = None if state.get("m") is None else np.asarray(state["m"], dtype=np.float64)


@register_strategy
class FedProx(FedAvg):
    """Li et al. 2020: server side is FedAvg; sites add ``mu/2 ||w - w_global||^2`` to their loss."""

    name = "fedprox"

    def __init__(self, *, proximal_mu: float = 0.01, **kwargs: Any):
        super().__init__(**kwargs)
        if proximal_mu < 0:
            raise ValueError("proximal_mu must be >= 0")
        self.proximal_mu = proximal_mu

    def configure_round(self, round_number: int, global_weights: np.ndarray) -> dict[str, Any]:
        return {**super().configure_round(round_number, global_weights), "proximal_mu": self.proximal_mu}


@register_strategy
class FedAdam(Strategy):
    """Reddi et al. 2021, "Adaptive Federated Optimization": the mean delta is a pseudo-gradient.

    ``m <- b1 m + (1 - b1) d``; ``v <- b2 v + (1 - b2) d^2``; ``w <- w + eta m / (sqrt(v) + tau)``
    (no bias correction, as in the paper's Algorithm 2). ``tau`` bounds the step where v is small.
    """

    name = "fedadam"

    def __init__(
        self, *, eta: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3, **kwargs: Any
    ):
        super().__init__(**kwargs)
        if eta <= 0 or tau <= 0 or not 0 <= beta1 < 1 or not 0 <= beta2 < 1:
            raise ValueError("need eta > 0, tau > 0, 0 <= beta1, beta2 < 1")
        self.eta, self.beta1, self.beta2, self.tau = eta, beta1, beta2, tau
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def aggregate(
        self, global_weights: np.ndarray, aggregated_update: np.ndarray, n_sites: int
    ) -> np.ndarray:
        w, d = self._check(global_weights, aggregated_update, n_sites)
        if self.m is None or self.v is None or self.m.shape != d.shape:
            self.m, self.v = np.zeros_like(d), np.zeros_like(d)
        self.m = self.beta1 * self.m + (1 - self.beta1) * d
        self.v = self.beta2 * self.v + (1 - self.beta2) * d * d
        return w + self.eta * self.m / (np.sqrt(self.v) + self.tau)

    def state_dict(self) -> dict[str, Any]:
        return {
            "m": None if self.m is None else self.m.copy(),
            "v": None if self.v is None else self.v.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m = None if state.get("m") is None else np.asarray(state["m"], dtype=np.float64)
        self.v = None if state.get("v") is None else np.asarray(state["v"], dtype=np.float64)


STRATEGIES: dict[str, type[Strategy]] = _REGISTRY
