"""The fedsgd and fedprox plugins on hand-made messages, and the client's update reply."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from fedflower.strategies.fedprox import FedProx
from fedflower.strategies.fedsgd import FULL_BATCH, FedSGD
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from helpers import FakeGrid, make_reply

from fedflower import keys
from fedflower.client import KerasClient
from fedflower.client.app import to_client_app
from fedflower.data.source import ClientData
from fedflower.errors import ConfigError
from fedflower.models import compile_model, logreg
from fedflower.server import registry
from fedflower.server.checked import CheckedFedAvg
from fedflower.server.registry import build_strategy
from fedflower.wire import named_record

NODES = [1, 2, 3]
WEIGHTS = [10, 30, 60]
SAMPLING = {"min_train_nodes": 3, "min_available_nodes": 3}


pytestmark = pytest.mark.usefixtures("task_identity")


def model_arrays(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((3, 2)).astype(np.float32),
        rng.standard_normal(2).astype(np.float32),
    ]


def configure(strategy, model, config: ConfigRecord | None = None) -> dict[int, Message]:
    msgs = strategy.configure_train(
        1, ArrayRecord(model), config or ConfigRecord(), FakeGrid(NODES)
    )
    return {m.metadata.dst_node_id: m for m in msgs}


def reply(instruction: Message, arrays: list[np.ndarray], weight: int) -> Message:
    return make_reply(instruction, arrays, weight, train_loss=None)


# -- fedsgd -------------------------------------------------------------------------------------
def test_fedsgd_asks_for_updates_and_one_full_batch_step() -> None:
    strategy = FedSGD(**SAMPLING)
    sent = ConfigRecord({keys.LOCAL_EPOCHS: 5, keys.BATCH_SIZE: 32})
    msgs = configure(strategy, model_arrays(0), sent)
    for msg in msgs.values():
        config = msg.content.config_records[keys.CONFIG]
        assert config[keys.RETURN_UPDATE] is True
        assert config[keys.LOCAL_EPOCHS] == 1
        assert config[keys.BATCH_SIZE] == FULL_BATCH
    assert dict(sent) == {keys.LOCAL_EPOCHS: 5, keys.BATCH_SIZE: 32}  # caller's config untouched


def test_fedsgd_without_full_batch_keeps_the_client_settings() -> None:
    msgs = configure(
        FedSGD(full_batch=False, **SAMPLING),
        model_arrays(0),
        ConfigRecord({keys.LOCAL_EPOCHS: 5, keys.BATCH_SIZE: 32}),
    )
    config = next(iter(msgs.values())).content.config_records[keys.CONFIG]
    assert (config[keys.LOCAL_EPOCHS], config[keys.BATCH_SIZE]) == (5, 32)
    assert config[keys.RETURN_UPDATE] is True


@pytest.mark.parametrize(("weighted", "eta"), [(True, 1.0), (True, 0.3), (False, 2.0)])
def test_fedsgd_applies_w_minus_eta_times_mean_update(weighted: bool, eta: float) -> None:
    strategy = FedSGD(server_learning_rate=eta, weighted=weighted, **SAMPLING)
    model = model_arrays(0)
    grads = [model_arrays(10 + i) for i in range(3)]
    msgs = configure(strategy, model)
    record, _ = strategy.aggregate_train(
        1, [reply(msgs[n], g, w) for n, g, w in zip(NODES, grads, WEIGHTS, strict=True)]
    )
    assert record is not None
    weights = WEIGHTS if weighted else [1, 1, 1]
    for i, got in enumerate(record.to_numpy_ndarrays()):
        mean_g = np.average(np.stack([g[i] for g in grads]).astype(np.float64), 0, weights)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, model[i] - eta * mean_g, rtol=1e-5, atol=1e-6)


def test_fedsgd_with_eta_one_on_updates_equals_fedavg_on_weights() -> None:
    model = model_arrays(0)
    local = [model_arrays(20 + i) for i in range(3)]
    updates = [[w - x for w, x in zip(model, lw, strict=True)] for lw in local]
    sgd = FedSGD(**SAMPLING)
    msgs = configure(sgd, model)
    got, _ = sgd.aggregate_train(
        1, [reply(msgs[n], u, w) for n, u, w in zip(NODES, updates, WEIGHTS, strict=True)]
    )
    avg = CheckedFedAvg(**SAMPLING)
    msgs = configure(avg, model)
    want, _ = avg.aggregate_train(
        1, [reply(msgs[n], lw, w) for n, lw, w in zip(NODES, local, WEIGHTS, strict=True)]
    )
    assert got is not None and want is not None
    for g, w in zip(got.to_numpy_ndarrays(), want.to_numpy_ndarrays(), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_fedsgd_skips_a_round_whose_updates_weigh_nothing() -> None:
    strategy = FedSGD(**SAMPLING)
    model = model_arrays(0)
    msgs = configure(strategy, model)
    replies = [reply(msgs[n], model_arrays(5), 0) for n in NODES]
    assert strategy.aggregate_train(1, replies) == (None, None)


def test_fedsgd_rejects_a_bad_server_learning_rate() -> None:
    with pytest.raises(ConfigError, match=r"server_learning_rate must be a number > 0, got -1\.0"):
        build_strategy({"name": "fedsgd", "server_learning_rate": -1.0})


def tiny_client(seed: int = 0) -> tuple[KerasClient, list[np.ndarray]]:
    keras.utils.set_random_seed(seed)
    model = compile_model(logreg((3,), 2), keras.optimizers.SGD(0.5), 2)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((20, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return KerasClient(model, ClientData(x, y, x[:4], y[:4])), model.get_weights()


def train_message(weights: list[np.ndarray], config: dict) -> Message:
    content = RecordDict(
        {
            keys.ARRAYS: named_record(["output/kernel", "output/bias"], weights),  # logreg's
            keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: 1, **config}),
        }
    )
    return Message(content, dst_node_id=1, message_type="train")


def test_client_app_replies_with_the_update_when_asked() -> None:
    client, start = tiny_client()
    app = to_client_app(lambda context: client)
    context = Context(1, 1, {keys.PARTITION_ID: 0}, RecordDict(), {})
    config = {keys.LOCAL_EPOCHS: 1, keys.BATCH_SIZE: FULL_BATCH, keys.LEARNING_RATE: 0.5}
    weights_reply = app(train_message(start, config), context)
    update_reply = app(train_message(start, {**config, keys.RETURN_UPDATE: True}), context)
    new = weights_reply.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
    update = update_reply.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
    for w0, w1, g in zip(start, new, update, strict=True):
        assert np.max(np.abs(w1 - w0)) > 1e-4  # the step moved the weights
        np.testing.assert_allclose(g, w0 - w1, rtol=1e-6, atol=1e-7)


# -- fedprox ------------------------------------------------------------------------------------
def test_fedprox_is_registered_and_checked() -> None:
    assert registry.load("fedprox") is FedProx
    assert issubclass(FedProx, CheckedFedAvg)
    assert FedProx.drops_stragglers is False
    assert registry.load("fedavg")().drops_stragglers is True


def test_fedprox_sends_mu_every_round_and_averages_like_fedavg() -> None:
    strategy = build_strategy({"name": "fedprox", "proximal_mu": 0.25, **SAMPLING})
    model = model_arrays(0)
    msgs = configure(strategy, model, ConfigRecord({keys.LOCAL_EPOCHS: 2}))
    for msg in msgs.values():
        config = msg.content.config_records[keys.CONFIG]
        assert config[keys.PROXIMAL_MU] == 0.25
        assert config[keys.LOCAL_EPOCHS] == 2
    local = [model_arrays(30 + i) for i in range(3)]
    record, _ = strategy.aggregate_train(
        1, [reply(msgs[n], lw, w) for n, lw, w in zip(NODES, local, WEIGHTS, strict=True)]
    )
    assert record is not None
    for i, got in enumerate(record.to_numpy_ndarrays()):
        want = np.average(np.stack([lw[i] for lw in local]).astype(np.float64), 0, WEIGHTS)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
