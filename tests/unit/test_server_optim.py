"""Server optimizers (fedflower.aggregation) and the strategies built on them.

Math against formulas by hand, the FedAvg equivalences, and a cross-check against Flower's own
FedAvgM / FedYogi / FedAdagrad / FedAdam (whose options our plugins reuse).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from fedflower.strategies.fedadagrad import FedAdagrad
from fedflower.strategies.fedadam import FedAdam
from fedflower.strategies.fedavg import FedAvg
from fedflower.strategies.fedavgm import FedAvgM
from fedflower.strategies.fedyogi import FedYogi
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import strategy as flwr_strategy
from helpers import FakeGrid, make_reply

from fedflower import aggregation
from fedflower.aggregation import ServerAdagrad, ServerAdam, ServerSGD, ServerYogi
from fedflower.errors import ConfigError, UpdateRejected
from fedflower.server import registry
from fedflower.server.checked import CheckedFedAvg
from fedflower.server.registry import build_strategy

SHAPES = [(4, 3), (3,)]
NODES = [5, 6, 7]
WEIGHTS = [10, 30, 60]


def arrays(seed: int, dtype: type = np.float32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


# -- pure math --------------------------------------------------------------------------------
def test_server_sgd_momentum_zero_lr_one_is_exactly_the_mean() -> None:
    opt = ServerSGD(learning_rate=1.0, momentum=0.0)
    x, target = arrays(0), arrays(1)
    for got, want in zip(opt.step(x, target), target, strict=True):
        np.testing.assert_array_equal(got, want)


def test_server_sgd_with_momentum_matches_the_recurrence_by_hand() -> None:
    opt = ServerSGD(learning_rate=0.5, momentum=0.9)
    x = arrays(0, np.float64)
    m = [np.zeros_like(a) for a in x]
    for t in range(1, 4):
        target = arrays(t, np.float64)
        delta = [b - a for a, b in zip(x, target, strict=True)]
        m = [0.9 * mi + d for mi, d in zip(m, delta, strict=True)]
        want = [a + 0.5 * mi for a, mi in zip(x, m, strict=True)]
        x = opt.step(x, target)
        for got, w in zip(x, want, strict=True):
            np.testing.assert_allclose(got, w, rtol=1e-12)


def test_server_sgd_momentum_zero_is_a_damped_fedavg_step() -> None:
    x, target = arrays(0, np.float64), arrays(1, np.float64)
    got = ServerSGD(learning_rate=0.25).step(x, target)
    for g, a, b in zip(got, x, target, strict=True):
        np.testing.assert_allclose(g, a + 0.25 * (b - a), rtol=1e-12)


def test_adam_two_steps_by_hand() -> None:
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    opt = ServerAdam(eta, b1, b2, tau)
    x0 = [np.array([1.0, -2.0, 0.5])]
    t1 = [np.array([1.5, -2.5, 0.5])]  # delta_1 = [0.5, -0.5, 0]
    x1 = opt.step(x0, t1)
    # m1 = 0.1 * d1 ; v1 = 0.01 * d1^2 ; x1 = x0 + eta * m1 / (sqrt(v1) + tau)
    d1 = np.array([0.5, -0.5, 0.0])
    m1, v1 = 0.1 * d1, 0.01 * d1**2
    np.testing.assert_allclose(x1[0], x0[0] + eta * m1 / (np.sqrt(v1) + tau), rtol=1e-12)
    # first step moves each coordinate by about eta * sign(delta) (0.05/(0.05+0.001) * eta)
    np.testing.assert_allclose(x1[0] - x0[0], [0.1 * 0.05 / 0.051, -0.1 * 0.05 / 0.051, 0.0])
    t2 = [x1[0] + np.array([0.2, 0.4, -1.0])]
    x2 = opt.step(x1, t2)
    d2 = np.array([0.2, 0.4, -1.0])
    m2, v2 = 0.9 * m1 + 0.1 * d2, 0.99 * v1 + 0.01 * d2**2
    np.testing.assert_allclose(x2[0], x1[0] + eta * m2 / (np.sqrt(v2) + tau), rtol=1e-12)


def test_yogi_and_adagrad_second_moments_by_hand() -> None:
    d1, d2 = np.array([0.5, -1.0]), np.array([0.1, 2.0])
    x0 = [np.zeros(2)]
    yogi, ada = ServerYogi(0.1, 0.9, 0.99, 1e-3), ServerAdagrad(0.1, 0.0, 0.0, 1e-3)
    y1, a1 = yogi.step(x0, [d1]), ada.step(x0, [d1])
    y2, a2 = yogi.step(y1, [y1[0] + d2]), ada.step(a1, [a1[0] + d2])
    # Yogi: v1 = 0 - 0.01 d1^2 sign(0 - d1^2) = 0.01 d1^2; v2 = v1 - 0.01 d2^2 sign(v1 - d2^2)
    v1 = 0.01 * d1**2
    v2 = v1 - 0.01 * d2**2 * np.sign(v1 - d2**2)
    m1 = 0.1 * d1
    m2 = 0.9 * m1 + 0.1 * d2
    np.testing.assert_allclose(y2[0], y1[0] + 0.1 * m2 / (np.sqrt(v2) + 1e-3), rtol=1e-12)
    # Adagrad (beta_1 = 0): m = delta, v = d1^2 + d2^2
    np.testing.assert_allclose(
        a2[0], a1[0] + 0.1 * d2 / (np.sqrt(d1**2 + d2**2) + 1e-3), rtol=1e-12
    )


@pytest.mark.parametrize(
    "opt", [ServerSGD(0.5, 0.9), ServerAdam(), ServerYogi(), ServerAdagrad()], ids=type
)
def test_optimizers_keep_dtypes_and_leave_integer_arrays_to_the_mean(opt) -> None:
    x = [np.ones((2, 2), np.float32), np.array([3, 4], np.int64), np.ones(3, np.float16)]
    target = [np.zeros((2, 2), np.float32), np.array([7, 9], np.int64), np.ones(3, np.float16)]
    for _ in range(2):
        out = opt.step(x, target)
        assert [a.dtype for a in out] == [a.dtype for a in x]
        np.testing.assert_array_equal(out[1], target[1])
        assert np.all(out[0] < 1.0)  # moved toward the mean
        x = out


def test_zero_update_does_not_move_the_adaptive_optimizers() -> None:
    x = arrays(0)
    for opt in [ServerAdam(), ServerYogi(), ServerAdagrad()]:
        for got, want in zip(opt.step(x, x), x, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ServerSGD(0.0),
        lambda: ServerSGD(1.0, momentum=1.0),
        lambda: ServerSGD(1.0, momentum=-0.1),
        lambda: ServerAdam(eta=0.0),
        lambda: ServerAdam(beta_2=1.0),
        lambda: ServerYogi(tau=0.0),
        lambda: ServerAdagrad(eta=float("nan")),
    ],
)
def test_bad_hyperparameters_are_config_errors(make) -> None:
    with pytest.raises(ConfigError, match="must be"):
        make()


def test_mismatched_target_is_rejected() -> None:
    with pytest.raises(UpdateRejected, match="shape"):
        ServerAdam().step(arrays(0), [np.zeros((4, 3)), np.zeros(4)])


# -- strategies on hand-made replies ------------------------------------------------------------
pytestmark = pytest.mark.usefixtures("task_identity")


def one_round(
    strategy, server_round: int, model: list[np.ndarray], updates: Sequence[list[np.ndarray]]
) -> list[np.ndarray]:
    """configure_train + aggregate_train with the given client updates (node order NODES)."""
    msgs = {
        m.metadata.dst_node_id: m
        for m in strategy.configure_train(
            server_round, ArrayRecord(model), ConfigRecord(), FakeGrid(NODES)
        )
    }
    replies = [
        make_reply(msgs[n], u, w, train_loss=None)
        for n, u, w in zip(NODES, updates, WEIGHTS, strict=True)
    ]
    record, _ = strategy.aggregate_train(server_round, replies)
    assert record is not None
    return record.to_numpy_ndarrays()


def round_updates(
    model: list[np.ndarray], t: int, dtype: type = np.float32
) -> list[list[np.ndarray]]:
    """The three clients' models in round ``t``: the global model plus seeded steps."""
    return [
        [a + b for a, b in zip(model, arrays(10 * t + i, dtype), strict=True)] for i in range(3)
    ]


def run_rounds(strategy, rounds: int = 3, dtype: type = np.float32) -> list[list[np.ndarray]]:
    model = arrays(100, dtype)
    history = []
    for t in range(1, rounds + 1):
        model = one_round(strategy, t, model, round_updates(model, t, dtype))
        history.append(model)
    return history


SAMPLING = {"min_train_nodes": 3, "min_available_nodes": 3}


def test_fedavgm_with_momentum_zero_and_lr_one_is_fedavg() -> None:
    got = run_rounds(FedAvgM(server_learning_rate=1.0, server_momentum=0.0, **SAMPLING))
    want = run_rounds(FedAvg(**SAMPLING))
    for g_round, w_round in zip(got, want, strict=True):
        for g, w in zip(g_round, w_round, strict=True):
            np.testing.assert_array_equal(g, w)


def test_fedavgm_round_is_the_server_sgd_step_on_the_weighted_mean() -> None:
    strategy = FedAvgM(server_learning_rate=0.7, server_momentum=0.5, **SAMPLING)
    model = arrays(100, np.float64)
    updates = [arrays(i, np.float64) for i in range(3)]
    got = one_round(strategy, 1, model, updates)
    mean = aggregation.weighted_mean(zip(updates, WEIGHTS, strict=True))
    for g, x, m in zip(got, model, mean, strict=True):
        np.testing.assert_allclose(g, x + 0.7 * (m - x), rtol=1e-12)


@pytest.mark.parametrize(
    ("ours", "flowers", "options"),
    [
        (FedAvgM, flwr_strategy.FedAvgM, {"server_learning_rate": 0.5, "server_momentum": 0.9}),
        (FedYogi, flwr_strategy.FedYogi, {"eta": 0.05, "beta_1": 0.9, "beta_2": 0.99}),
        (FedAdagrad, flwr_strategy.FedAdagrad, {"eta": 0.05, "tau": 0.01}),
    ],
    ids=["fedavgm", "fedyogi", "fedadagrad"],
)
def test_same_trajectory_as_flowers_implementation(ours, flowers, options) -> None:
    got = run_rounds(ours(**options, **SAMPLING), dtype=np.float64)
    want = run_rounds(flowers(**options, **SAMPLING), dtype=np.float64)
    for g_round, w_round in zip(got, want, strict=True):
        for g, w in zip(g_round, w_round, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


def test_fedadam_differs_from_flower_only_by_its_bias_correction_and_keeps_float32() -> None:
    eta, b1, b2 = 0.05, 0.9, 0.99
    ours = run_rounds(FedAdam(eta=eta, beta_1=b1, beta_2=b2, **SAMPLING), rounds=1)
    # Flower scales eta by sqrt(1 - b2^(t+1)) / (1 - b1^(t+1)) at round t (here t = 1).
    eta_flower = eta / (np.sqrt(1 - b2**2) / (1 - b1**2))
    flowers = run_rounds(
        flwr_strategy.FedAdam(eta=eta_flower, beta_1=b1, beta_2=b2, **SAMPLING), rounds=1
    )
    for g, w in zip(ours[0], flowers[0], strict=True):
        assert g.dtype == np.float32
        assert w.dtype == np.float64  # Flower's FedAdam up-casts the global model
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_plugins_are_registered_checked_and_built_from_config(name: str) -> None:
    cls = registry.load(name)
    assert issubclass(cls, CheckedFedAvg)
    # the checked aggregation, not the Flower base's, through the MRO alone
    assert cls.aggregate_train is CheckedFedAvg.aggregate_train
    options = {"server_momentum": 0.9} if name == "fedavgm" else {}  # else it is FedAvg
    strategy = build_strategy({"name": name, **options, **SAMPLING})
    assert isinstance(strategy, cls)
    # every round is one step of the plugin's server optimizer towards the weighted mean
    optimizer, model = strategy.make_optimizer(), arrays(100)
    fedavg = run_rounds(FedAvg(**SAMPLING), rounds=3)
    for t, got in enumerate(run_rounds(strategy, rounds=3), start=1):
        updates = round_updates(model, t)
        model = optimizer.step(model, aggregation.weighted_mean(zip(updates, WEIGHTS, strict=True)))
        for g, w in zip(got, model, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
    # not FedAvg (though FedAvgM's first step is: its momentum starts at zero)
    assert max(np.abs(g - f).max() for g, f in zip(model, fedavg[-1], strict=True)) > 1e-2


def test_invalid_options_fail_before_the_first_round() -> None:
    strategy = build_strategy({"name": "fedavgm", "server_momentum": 1.5, **SAMPLING})
    with pytest.raises(
        ConfigError, match=r"server_momentum must be a number in \[0, 1\), got 1\.5"
    ):
        strategy.configure_train(1, ArrayRecord(arrays(0)), ConfigRecord(), FakeGrid(NODES))
