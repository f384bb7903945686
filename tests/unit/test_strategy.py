"""CheckedFedAvg / the FedAvg plugin: aggregate_train on hand-made reply Messages."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import numpy as np
import pytest
from fedflower.strategies.fedavg import FedAvg
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
)
from helpers import FakeGrid, make_reply

from fedflower import keys
from fedflower.server import registry
from fedflower.server.checked import CheckedFedAvg

SHAPES = [(5, 3), (3,), (3, 1), (1,)]
NODES = [11, 12, 13, 14]


pytestmark = pytest.mark.usefixtures("task_identity")


def global_model(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def instructions(
    strategy: CheckedFedAvg, model: list[np.ndarray], nodes: Sequence[int] = NODES
) -> dict[int, Message]:
    """The strategy's own train instructions, one per node (as in a real round)."""
    msgs = strategy.configure_train(1, ArrayRecord(model), ConfigRecord(), FakeGrid(nodes))
    return {m.metadata.dst_node_id: m for m in msgs}


def client_update(model: list[np.ndarray], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(m + rng.standard_normal(m.shape)).astype(m.dtype) for m in model]


def np_weighted_mean(updates: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
    return [
        np.average(np.stack([u[i] for u in updates]).astype(np.float64), axis=0, weights=weights)
        for i in range(len(updates[0]))
    ]


@pytest.fixture(params=[CheckedFedAvg, FedAvg], ids=["CheckedFedAvg", "FedAvg-plugin"])
def strategy(request: pytest.FixtureRequest) -> CheckedFedAvg:
    return request.param(min_train_nodes=1, min_available_nodes=1)


def test_plugin_is_registered_and_checked() -> None:
    assert registry.load("fedavg") is FedAvg
    assert issubclass(FedAvg, CheckedFedAvg)


def test_result_is_numpy_weighted_mean(strategy: CheckedFedAvg) -> None:
    model = global_model()
    ins = instructions(strategy, model)
    updates = [client_update(model, s) for s in range(len(NODES))]
    weights = [10, 40, 5, 45]
    losses = [0.9, 0.5, 0.7, 0.1]
    replies = [
        make_reply(ins[n], u, w, loss)
        for n, u, w, loss in zip(NODES, updates, weights, losses, strict=True)
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    got = arrays.to_numpy_ndarrays()
    for g, want, ref in zip(got, np_weighted_mean(updates, weights), model, strict=True):
        assert g.dtype == ref.dtype
        assert g.shape == ref.shape
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-6)
    assert metrics[keys.TRAIN_LOSS] == pytest.approx(np.average(losses, weights=weights))
    assert keys.NUM_EXAMPLES not in metrics
    assert strategy.rejected == 0


def test_configure_train_sends_the_global_model(strategy: CheckedFedAvg) -> None:
    model = global_model()
    ins = instructions(strategy, model)
    assert sorted(ins) == NODES
    for msg in ins.values():
        assert msg.metadata.message_type == MessageType.TRAIN
        sent = msg.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
        for s, m in zip(sent, model, strict=True):
            np.testing.assert_array_equal(s, m)


def _bad_replies(ins: dict[int, Message], model: list[np.ndarray]) -> dict[str, Message]:
    wrong_shape = [np.zeros((3, 5), np.float32), *model[1:]]
    nan = [m.copy() for m in model]
    nan[2][1, 0] = np.nan
    inf = [m.copy() for m in model]
    inf[0][0, 0] = np.inf
    return {
        "wrong-shape": make_reply(ins[11], wrong_shape, 50),
        "missing-layer": make_reply(ins[11], model[:-1], 50),
        "nan": make_reply(ins[11], nan, 50),
        "inf": make_reply(ins[11], inf, 50),
        "no-num-examples": make_reply(ins[11], client_update(model, 9), None),
        "no-arrays": make_reply(ins[11], None, 50),
        "two-weights": make_reply(ins[11], client_update(model, 9), 50, extra_metric_records=1),
        "negative-num-examples": make_reply(ins[11], client_update(model, 9), -50),
        "error": make_reply(ins[11], None, error="ValueError: boom"),
        "renamed-arrays": _renamed(make_reply(ins[11], client_update(model, 9), 50)),
    }


def _renamed(reply: Message) -> Message:
    """The same arrays under other names than the global model's."""
    record = reply.content.array_records[keys.ARRAYS]
    reply.content[keys.ARRAYS] = ArrayRecord({f"w{k}": v for k, v in record.items()})
    return reply


BAD_KINDS = [
    "wrong-shape",
    "missing-layer",
    "nan",
    "inf",
    "no-num-examples",
    "no-arrays",
    "two-weights",
    "negative-num-examples",
    "error",
    "renamed-arrays",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_malformed_reply_is_dropped_and_counted(strategy: CheckedFedAvg, kind: str) -> None:
    model = global_model()
    ins = instructions(strategy, model)
    good = {n: client_update(model, n) for n in (12, 13, 14)}
    weights = {12: 30, 13: 10, 14: 60}
    replies = [_bad_replies(ins, model)[kind]] + [
        make_reply(ins[n], good[n], weights[n]) for n in good
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None and metrics is not None
    want = np_weighted_mean(list(good.values()), list(weights.values()))
    for g, w in zip(arrays.to_numpy_ndarrays(), want, strict=True):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    assert strategy.rejected == 1


def test_rejections_accumulate_over_rounds(strategy: CheckedFedAvg) -> None:
    model = global_model()
    for rnd in (1, 2):
        ins = instructions(strategy, model)
        bad = _bad_replies(ins, model)
        replies = [bad["nan"], bad["error"], make_reply(ins[12], client_update(model, rnd), 5)]
        arrays, _ = strategy.aggregate_train(rnd, replies)
        assert arrays is not None
    assert strategy.rejected == 4


def test_only_malformed_replies_give_no_update(strategy: CheckedFedAvg) -> None:
    model = global_model()
    ins = instructions(strategy, model)
    bad = _bad_replies(ins, model)
    assert strategy.aggregate_train(1, [bad["nan"], bad["wrong-shape"], bad["error"]]) == (
        None,
        None,
    )
    assert strategy.aggregate_train(1, []) == (None, None)


def test_all_zero_weights_keep_the_global_model(strategy: CheckedFedAvg) -> None:
    """Clients with no examples must not crash the round (nothing to average)."""
    model = global_model()
    ins = instructions(strategy, model)
    replies = [make_reply(ins[n], client_update(model, n), 0) for n in (11, 12)]
    assert strategy.aggregate_train(1, replies) == (None, None)


def test_zero_weight_reply_does_not_move_the_mean(strategy: CheckedFedAvg) -> None:
    model = global_model()
    ins = instructions(strategy, model)
    a, b = client_update(model, 1), client_update(model, 2)
    arrays, _ = strategy.aggregate_train(1, [make_reply(ins[11], a, 20), make_reply(ins[12], b, 0)])
    assert arrays is not None
    for g, w in zip(arrays.to_numpy_ndarrays(), a, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_reply_order_does_not_change_the_result(strategy: CheckedFedAvg) -> None:
    model = global_model()
    ins = instructions(strategy, model)
    weights = [3, 1000, 7, 250]
    replies = [
        make_reply(ins[n], client_update(model, n), w, 0.1 * n)
        for n, w in zip(NODES, weights, strict=True)
    ]
    first_arrays, first_metrics = None, None
    for order in itertools.permutations(replies):
        arrays, metrics = strategy.aggregate_train(1, list(order))
        assert arrays is not None and metrics is not None
        got = arrays.to_numpy_ndarrays()
        if first_arrays is None:
            first_arrays, first_metrics = got, dict(metrics)
            continue
        for g, f in zip(got, first_arrays, strict=True):
            np.testing.assert_array_equal(g, f)  # bit-identical, not just close
        assert dict(metrics) == first_metrics


def test_aggregated_arrays_keep_the_record_keys(strategy: CheckedFedAvg) -> None:
    model = global_model()
    ins = instructions(strategy, model)
    arrays, _ = strategy.aggregate_train(1, [make_reply(ins[11], client_update(model, 0), 4)])
    assert arrays is not None
    assert list(arrays.keys()) == list(ArrayRecord(model).keys())


def test_fraction_train_samples_that_many_nodes() -> None:
    strategy = FedAvg(fraction_train=0.5, min_train_nodes=1, min_available_nodes=1)
    ins = instructions(strategy, global_model(), nodes=list(range(1, 11)))
    assert len(ins) == 5
    strategy = FedAvg(fraction_train=0.1, min_train_nodes=3, min_available_nodes=1)
    assert len(instructions(strategy, global_model(), nodes=list(range(1, 11)))) == 3


def test_a_missing_array_is_named(
    strategy: CheckedFedAvg, caplog: pytest.LogCaptureFixture
) -> None:
    model = global_model()
    ins = instructions(strategy, model)
    reply = make_reply(ins[11], client_update(model, 1), 10)
    record = reply.content.array_records[keys.ARRAYS]
    reply.content[keys.ARRAYS] = ArrayRecord({k: v for k, v in record.items() if k != "2"})
    with caplog.at_level(logging.WARNING):
        strategy.aggregate_train(1, [reply, make_reply(ins[12], client_update(model, 2), 10)])
    assert "variable '2' is missing" in caplog.text
    assert strategy.rejected == 1


def test_a_float64_update_is_cast_to_the_models_dtype(strategy: CheckedFedAvg) -> None:
    model = global_model()
    ins = instructions(strategy, model)
    a = client_update(model, 1)
    b = [x.astype(np.float64) for x in client_update(model, 2)]
    arrays, _ = strategy.aggregate_train(
        1, [make_reply(ins[11], a, 10), make_reply(ins[12], b, 30)]
    )
    assert arrays is not None and strategy.rejected == 0
    want = np_weighted_mean([a, [x.astype(np.float32) for x in b]], [10, 30])
    for g, w in zip(arrays.to_numpy_ndarrays(), want, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
