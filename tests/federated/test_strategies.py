import numpy as np
import pytest

from evaluator.federated.strategies import (
    STRATEGIES,
    FedAdam,
    FedAvg,
    FedProx,
    Strategy,
    get_strategy,
    mean_update,
    strategy_names,
)


def test_registry_knows_the_three_strategies_by_name():
    assert strategy_names() == ("fedadam", "fedavg", "fedprox")
    assert isinstance(get_strategy("fedavg"), FedAvg)
    assert isinstance(get_strategy("FedProx", proximal_mu=0.1), FedProx)
    assert isinstance(get_strategy("fedadam", eta=0.1), FedAdam)
    assert all(issubclass(cls, Strategy) for cls in STRATEGIES.values())
    with pytest.raises(ValueError, match="unknown strategy 'krum'; known: fedadam, fedavg, fedprox"):
        get_strategy("krum")


def test_fedavg_adds_the_mean_update():
    w = np.array([1.0, 2.0])
    deltas = np.array([[0.1, -0.2], [0.3, 0.0], [-0.1, 0.5]])
    update = mean_update(deltas.sum(axis=0), 3)  # what secure aggregation yields, as a mean
    np.testing.assert_allclose(FedAvg().aggregate(w, update, 3), w + deltas.mean(axis=0))
    np.testing.assert_allclose(
        FedAvg(server_learning_rate=0.5).aggregate(w, update, 3), w + 0.5 * deltas.mean(axis=0)
    )


def test_configure_round_tells_sites_lr_epochs_and_fedprox_mu():
    w = np.zeros(3)
    config = FedAvg(learning_rate=0.05, local_epochs=2).configure_round(4, w)
    assert config == {"strategy": "fedavg", "round": 4, "learning_rate": 0.05, "local_epochs": 2}
    prox = FedProx(proximal_mu=0.3, learning_rate=0.05)
    assert prox.configure_round(1, w)["proximal_mu"] == 0.3
    np.testing.assert_allclose(prox.aggregate(w, np.ones(3), 3), np.ones(3))  # server side = FedAvg


def test_fedadam_reduces_a_simple_quadratic():
    # f(w) = 0.5 * sum(a * (w - target)^2); each "site" takes a local gradient step, the mean delta
    # is the negative gradient scaled by the local lr.
    rng = np.random.default_rng(30)
    a = np.array([1.0, 10.0, 0.1, 3.0])
    target = rng.normal(size=4)

    def loss(w):
        return 0.5 * np.sum(a * (w - target) ** 2)

    w = np.zeros(4)
    start = loss(w)
    strategy = FedAdam(eta=0.05)
    for _ in range(300):
        deltas = [-0.01 * a * (w - target) + rng.normal(scale=1e-4, size=4) for _ in range(3)]
        w = strategy.aggregate(w, np.mean(deltas, axis=0), 3)
    assert loss(w) < start * 1e-2


def test_fedadam_state_round_trips_so_the_hub_can_persist_it():
    s = FedAdam()
    w = s.aggregate(np.zeros(2), np.array([1.0, -1.0]), 3)
    s2 = FedAdam()
    s2.load_state_dict(s.state_dict())
    d = np.array([0.5, 0.5])
    np.testing.assert_allclose(s.aggregate(w, d, 3), s2.aggregate(w, d, 3))


def test_aggregate_refuses_mismatched_or_non_finite_updates():
    for strategy in (FedAvg(), FedAdam()):
        with pytest.raises(ValueError):
            strategy.aggregate(np.zeros(3), np.zeros(2), 3)
        with pytest.raises(ValueError):
            strategy.aggregate(np.zeros(2), np.array([np.nan, 0.0]), 3)
        with pytest.raises(ValueError):
            strategy.aggregate(np.zeros(2), np.zeros(2), 0)
