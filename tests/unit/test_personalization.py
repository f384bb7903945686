"""fedflower.client.personalization: the mod's personal models, kept in Context.state."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, Message, MessageType
from helpers import answer, client_context, task

from fedflower import keys
from fedflower.client.personalization import Personalization, local_names, personalization_mod
from fedflower.errors import ConfigError

pytestmark = pytest.mark.usefixtures("task_identity")


def handler(log: list[tuple[str, list[float], dict]]) -> object:
    """A ClientApp stand-in: training adds 1 to every array (from START when given);
    evaluation's accuracy is the first array's first value."""

    def call_next(msg: Message, context: Context) -> Message:
        arrays = msg.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
        config = dict(msg.content.config_records[keys.CONFIG])
        start = msg.content.array_records.get(keys.START)
        kind = msg.metadata.message_type
        log.append((kind, [float(a[0]) for a in arrays], config))
        if kind == MessageType.TRAIN:
            base = arrays if start is None else start.to_numpy_ndarrays()
            return answer(msg, [b + 1 for b in base])
        metrics = {
            keys.EVAL_LOSS: 0.0,
            keys.EVAL_ACCURACY: float(arrays[0][0]),
            keys.NUM_EXAMPLES: 1,
        }
        return answer(msg, metrics=metrics)

    return call_next


def message(kind: str, values: list[float], **config: object) -> Message:
    arrays = [np.full(2, v, dtype=np.float32) for v in values]
    return task(arrays, kind, config={keys.LOCAL_EPOCHS: 1, **config})


def values(reply: Message) -> list[float]:
    return [float(a[0]) for a in reply.content.array_records[keys.ARRAYS].to_numpy_ndarrays()]


def test_fedper_keeps_the_head_on_the_site_and_sends_the_global_one_back() -> None:
    log: list = []
    mod = personalization_mod(lambda _: {"name": "fedper"}, lambda *_: ["1"])
    ctx, call_next = client_context(), handler(log)
    assert values(mod(message(MessageType.TRAIN, [0, 0]), ctx, call_next)) == [1, 0]
    # round 2: the global head (5) is replaced by the site's own (1) before training
    assert values(mod(message(MessageType.TRAIN, [5, 5]), ctx, call_next)) == [6, 5]
    assert log[-1][1] == [5, 1]
    reply = mod(message(MessageType.EVALUATE, [7, 7]), ctx, call_next)
    metrics = reply.content.metric_records[keys.METRICS]
    assert metrics[keys.EVAL_ACCURACY] == 7.0
    assert metrics["personal_eval_accuracy"] == 7.0  # body global, head the site's
    assert log[-1][1] == [7, 2]


def test_fedper_with_updates_replies_zero_for_the_local_layers() -> None:
    log: list = []
    mod = personalization_mod(lambda _: {"name": "fedper"}, lambda *_: ["1"])
    ctx = client_context()

    def update(msg: Message, c: Context) -> Message:  # reply w_sent - w_trained = -1
        reply = handler(log)(msg, c)
        arrays = reply.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
        reply.content[keys.ARRAYS] = ArrayRecord([np.full(2, -1.0, np.float32) for _ in arrays])
        return reply

    reply = mod(message(MessageType.TRAIN, [3, 3], **{keys.RETURN_UPDATE: True}), ctx, update)
    assert values(reply) == [-1, 0]
    kept = ctx.state.array_records[keys.PERSONAL_STATE].to_numpy_ndarrays()
    assert float(kept[0][0]) == 4.0  # the trained head: 3 - (-1)


def test_ditto_trains_a_personal_model_proximal_to_the_global_one() -> None:
    log: list = []
    settings = {"name": "ditto", "ditto_lambda": 0.5, "ditto_epochs": 3}
    mod = personalization_mod(lambda _: settings, lambda *_: [])
    ctx, call_next = client_context(), handler(log)
    assert values(mod(message(MessageType.TRAIN, [0, 0]), ctx, call_next)) == [1, 1]
    personal_task = log[-1]
    assert personal_task[2][keys.PROXIMAL_MU] == 0.5 and personal_task[2][keys.LOCAL_EPOCHS] == 3
    mod(message(MessageType.TRAIN, [10, 10]), ctx, call_next)  # personal: 1 -> 2, anchored at 10
    assert log[-1][1] == [10, 10]  # the anchor is the global model
    reply = mod(message(MessageType.EVALUATE, [10, 10]), ctx, call_next)
    metrics = reply.content.metric_records[keys.METRICS]
    assert (metrics[keys.EVAL_ACCURACY], metrics["personal_eval_accuracy"]) == (10.0, 2.0)


def test_fedrep_trains_the_head_on_the_received_body_then_the_body_alone() -> None:
    log: list = []
    settings = {"name": "fedrep", "fedrep_head_epochs": 4}
    mod = personalization_mod(lambda _: settings, lambda *_: ["1"])
    ctx, call_next = client_context(), handler(log)
    mod(message(MessageType.TRAIN, [0, 0], **{keys.LOCAL_EPOCHS: 2}), ctx, call_next)
    # round 2: head first (site's head 2 after round 1's head and body tasks), body fixed
    reply = mod(message(MessageType.TRAIN, [5, 5], **{keys.LOCAL_EPOCHS: 2}), ctx, call_next)
    (_, head_in, head_cfg), (_, body_in, body_cfg) = log[-2:]
    assert head_in == [5, 2] and head_cfg[keys.FROZEN] == ["0"]
    assert head_cfg[keys.LOCAL_EPOCHS] == 4
    assert body_in == [6, 3] and body_cfg[keys.FROZEN] == ["1"]
    assert body_cfg[keys.LOCAL_EPOCHS] == 2
    assert values(reply) == [7, 5]  # the server gets the body back, and its own head
    kept = ctx.state.array_records[keys.PERSONAL_STATE].to_numpy_ndarrays()
    assert float(kept[0][0]) == 4.0  # the head after the body task (the stand-in moves all)


def test_apfl_trains_the_mixture_and_keeps_the_local_model() -> None:
    log: list = []
    settings = {"name": "apfl", "apfl_alpha": 0.25}
    mod = personalization_mod(lambda _: settings, lambda *_: [])
    ctx, call_next = client_context(), handler(log)
    mod(message(MessageType.TRAIN, [4, 4], **{keys.LEARNING_RATE: 0.1}), ctx, call_next)
    # v starts at w = 4; the mixture 4 trains to 5, so v = (5 - 0.75 * 4) / 0.25 = 8
    assert log[-1][1] == [4, 4] and log[-1][2][keys.LEARNING_RATE] == pytest.approx(0.025)
    kept = ctx.state.array_records[keys.PERSONAL_STATE].to_numpy_ndarrays()
    assert float(kept[0][0]) == pytest.approx(8.0)
    reply = mod(message(MessageType.EVALUATE, [0, 0]), ctx, call_next)
    assert log[-1][1] == [2, 2]  # personal: 0.25 * 8 + 0.75 * 0
    assert reply.content.metric_records[keys.METRICS]["personal_eval_accuracy"] == 2.0


def test_frozen_weights_stay_unchanged_in_real_keras_training() -> None:
    from fedflower.client.keras_client import KerasClient
    from fedflower.data.source import ClientData

    model = tiny_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.integers(0, 2, 16)
    client = KerasClient(model, ClientData(x, y, x[:0], y[:0]))
    start = client.get_parameters({})
    paths = [str(v.path) for v in model.weights]
    trainable = [p for p in paths if "moving" not in p]  # statistics move in every forward pass
    config = {keys.LOCAL_EPOCHS: 2, keys.BATCH_SIZE: 4, keys.LEARNING_RATE: 0.1}
    for fixed in (["body/kernel", "body/bias", "norm/gamma", "norm/beta"], HEAD):
        trained, _, _ = client.fit(start, {**config, keys.FROZEN: fixed})
        moved = [p for p, a, b in zip(paths, start, trained, strict=True) if (a != b).any()]
        assert [p for p in moved if p in trainable] == [p for p in trainable if p not in fixed]
    trained, _, _ = client.fit(start, config)  # nothing frozen: everything trainable moves
    assert all((a != b).any() for a, b in zip(start[:2], trained[:2], strict=True))


def test_finetune_evaluates_the_global_model_after_local_epochs() -> None:
    log: list = []
    mod = personalization_mod(lambda _: {"name": "finetune", "finetune_epochs": 2}, lambda *_: [])
    ctx = client_context()
    reply = mod(message(MessageType.EVALUATE, [4]), ctx, handler(log))
    assert "personal_eval_accuracy" not in reply.content.metric_records[keys.METRICS]
    mod(message(MessageType.TRAIN, [4], **{keys.BATCH_SIZE: 8}), ctx, handler(log))
    reply = mod(message(MessageType.EVALUATE, [4]), ctx, handler(log))
    assert reply.content.metric_records[keys.METRICS]["personal_eval_accuracy"] == 4.0
    # the evaluate handler fine-tunes: asked for 2 epochs at the last round's batch size
    assert log[-1][0] == MessageType.EVALUATE
    assert log[-1][2][keys.FINETUNE_EPOCHS] == 2 and log[-1][2][keys.BATCH_SIZE] == 8


def test_none_passes_every_message_through() -> None:
    log: list = []
    mod = personalization_mod(lambda _: {"name": "none"}, lambda *_: [])
    ctx = client_context()
    mod(message(MessageType.EVALUATE, [4]), ctx, handler(log))
    assert len(log) == 1 and len(ctx.state) == 0


def tiny_model() -> keras.Model:
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="body")(inputs)
    x = keras.layers.BatchNormalization(name="norm")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


HEAD = ["head/kernel", "head/bias"]
NORM = ["norm/gamma", "norm/beta", "norm/moving_mean", "norm/moving_variance"]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"name": "fedper"}, HEAD),
        ({"name": "fedbn"}, NORM),
        ({"name": "fedper", "local_layers": ["b*"]}, ["body/kernel", "body/bias"]),
        ({"name": "fedper", "local_layers": ["re:^(norm|head)$"]}, NORM + HEAD),
        ({"name": "fedrep"}, HEAD),
        ({"name": "ditto"}, []),
        ({"name": "apfl"}, []),
    ],
)
def test_local_layers_by_keras_layer_name(settings: dict, expected: list[str]) -> None:
    """The local layers' weights are named by variable path, their key on the wire."""
    assert local_names(tiny_model(), Personalization(**settings)) == expected


@pytest.mark.parametrize(
    "settings",
    [
        {"name": "pfedme"},
        {"name": "fedper", "local_layers": ["missing"]},
        {"name": "fedper", "local_layers": ["re:("]},
        {"name": "ditto", "ditto_lambda": -1},
        {"name": "finetune", "finetune_epochs": 0},
        {"name": "apfl", "apfl_alpha": 1.5},
        {"name": "fedrep", "fedrep_head_epochs": -1},
    ],
)
def test_bad_settings_are_one_line_config_errors(settings: dict) -> None:
    with pytest.raises(ConfigError, match="personalization"):
        local_names(tiny_model(), Personalization(**settings))
