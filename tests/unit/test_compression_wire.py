"""Compression on Flower's wire: client mod + server grid wrapper over the in-process engine.

A tiny ClientApp (no TensorFlow) adds a known update to the model it receives; the server
side encodes models, meters the bytes and decodes the updates.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from omegaconf import OmegaConf

from fedflower import keys
from fedflower.aggregation.codecs import Codec
from fedflower.client.compression import compression_mod
from fedflower.engine.local import LocalGrid
from fedflower.engine.metered import MeteredGrid
from fedflower.errors import ConfigError
from fedflower.server.compression import CompressedGrid, compressed_grid
from fedflower.server.rules import validate_compression

SHAPES = [(200, 100), (100,), (100, 10)]

pytestmark = pytest.mark.usefixtures("task_identity")


def update_for(node: int, server_round: int) -> list[np.ndarray]:
    rng = np.random.default_rng([node, server_round])
    return [rng.standard_normal(s).astype(np.float32) * 0.01 for s in SHAPES]


def make_app(return_update: bool = False) -> ClientApp:
    app = ClientApp(mods=[compression_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        record = msg.content.array_records[keys.ARRAYS]
        assert list(record.keys()) == ["a", "b", "c"]  # the client sees plain weights
        assert keys.COMPRESSION not in msg.content.config_records
        rnd = int(msg.content.config_records[keys.CONFIG][keys.SERVER_ROUND])
        delta = update_for(context.node_id, rnd)
        if return_update:
            out = delta
        else:
            out = [w + d for w, d in zip(record.to_numpy_ndarrays(), delta, strict=True)]
        arrays = ArrayRecord(dict(zip("abc", map(Array, out), strict=True)))
        metrics = MetricRecord({keys.NUM_EXAMPLES: 1})
        return Message(RecordDict({keys.ARRAYS: arrays, keys.METRICS: metrics}), reply_to=msg)

    return app


def model() -> list[np.ndarray]:
    rng = np.random.default_rng(9)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def train_messages(
    grid: LocalGrid, weights: list[np.ndarray], server_round: int, return_update: bool = False
) -> list[Message]:
    arrays = ArrayRecord(dict(zip("abc", map(Array, weights), strict=True)))
    config = ConfigRecord({keys.SERVER_ROUND: server_round, keys.RETURN_UPDATE: return_update})
    return [
        Message(RecordDict({keys.ARRAYS: arrays, keys.CONFIG: config}), node, MessageType.TRAIN)
        for node in grid.get_node_ids()
    ]


def run_rounds(
    up: Codec, down: Codec, rounds: int = 3, feedback: bool = False, return_update: bool = False
) -> tuple[list[list[list[np.ndarray]]], MeteredGrid, CompressedGrid, LocalGrid]:
    local = LocalGrid(make_app(return_update), 3)
    metered = MeteredGrid(local)
    grid = CompressedGrid(metered, up, down, error_feedback=feedback, seed=1)
    received = []
    for rnd in range(1, rounds + 1):
        replies = grid.send_and_receive(train_messages(local, model(), rnd, return_update))
        received.append([r.content.array_records[keys.ARRAYS].to_numpy_ndarrays() for r in replies])
    return received, metered, grid, local


@pytest.mark.parametrize("down", ["none", "fp16", "int8"])
def test_int8_updates_decoded_on_the_exact_model_within_half_step(down: str) -> None:
    received, *_ = run_rounds(Codec("int8", min_elements=1000), Codec(down, min_elements=1000))
    w = model()
    for rnd, replies in enumerate(received, start=1):
        for node, arrays in enumerate(replies, start=1):
            for i, (got, ref, d) in enumerate(zip(arrays, w, update_for(node, rnd), strict=True)):
                # the server adds the update to its exact model; the update's own error is
                # within half a step of the update's range (and the downlink's error is gone)
                step = np.ptp(d) / 255 if d.size >= 1000 else 0.0
                assert np.abs(got - (ref + d)).max() <= step / 2 + 1e-6, (rnd, node, i)


def test_bytes_up_shrink_by_the_codec_ratio() -> None:
    _, plain, *_ = run_rounds(Codec("fp16", min_elements=10**9), Codec("none"))  # raw, same records
    _, int8, grid, _ = run_rounds(
        Codec("int8", min_elements=1000), Codec("int8", min_elements=1000)
    )
    assert plain.bytes_up / int8.bytes_up >= 3.3  # 21,000 floats, 1,100 of them raw
    assert plain.bytes_down / int8.bytes_down >= 3.3
    ratios = grid.round_report()
    assert ratios["compression_up"] == pytest.approx(plain.bytes_up / int8.bytes_up, rel=0.01)


def test_error_feedback_residual_lives_in_the_context_state() -> None:
    received, _, _, local = run_rounds(
        Codec("topk", fraction=0.1, value_dtype="float32", min_elements=0),
        Codec("none"),
        rounds=4,
        feedback=True,
    )
    w = model()
    for node, context in local._contexts.items():
        residual = context.state.array_records[keys.COMPRESS_RESIDUAL].to_numpy_ndarrays()
        for i in range(len(SHAPES)):
            sent = sum(received[r][node - 1][i] - w[i] for r in range(4))
            total = sum(update_for(node, r)[i] for r in range(1, 5))
            assert np.abs(sent + residual[i] - total).max() < 1e-5


def test_fedsgd_updates_are_decoded_as_they_are() -> None:
    received, *_ = run_rounds(
        Codec("topk", fraction=1.0, value_dtype="float32", min_elements=0),
        Codec("int8"),
        rounds=1,
        return_update=True,
    )
    for node, arrays in enumerate(received[0], start=1):
        for got, d in zip(arrays, update_for(node, 1), strict=True):
            np.testing.assert_array_equal(got, d)


def test_a_malformed_update_loses_its_arrays() -> None:
    local = LocalGrid(make_app(), 2)
    grid = CompressedGrid(MeteredGrid(local), Codec("int8", min_elements=0), Codec("none"))
    messages = train_messages(local, model(), 1)
    ids = list(grid.push_messages(messages))
    replies = list(local.pull_messages(ids))
    bad = replies[0].content.array_records[keys.ARRAYS]
    del bad["a::step"]
    local._replies.update({i: r for i, r in zip(ids, replies, strict=True)})
    decoded = list(grid.pull_messages(ids))
    assert keys.ARRAYS not in decoded[0].content.array_records
    assert keys.ARRAYS in decoded[1].content.array_records


def test_no_wrapper_without_compression() -> None:
    grid = MeteredGrid(LocalGrid(make_app(), 1))
    assert compressed_grid(grid, {"name": "none", "down": "none"}) is grid
    assert isinstance(compressed_grid(grid, {"name": "none", "down": "fp16"}), CompressedGrid)


@pytest.mark.parametrize(
    ("privacy", "secagg", "name", "down", "ok"),
    [
        ("dp_server", "none", "topk", "none", True),
        ("local_dp", "none", "int8", "int8", True),
        ("dp_client", "none", "int8", "none", False),
        ("dp_adaptive", "none", "fp16", "none", False),
        ("dp_client", "none", "none", "int8", True),
        ("none", "secaggplus", "topk", "none", False),
        ("none", "secaggplus", "none", "fp16", True),
    ],
)
def test_unsound_combinations_are_refused(
    privacy: str, secagg: str, name: str, down: str, ok: bool
) -> None:
    cfg = OmegaConf.create(
        {
            "privacy": {"name": privacy},
            "secagg": {"name": secagg},
            "compression": {"name": name, "down": down, "error_feedback": False},
        }
    )
    if ok:
        validate_compression(cfg)
    else:
        with pytest.raises(ConfigError, match=f"compression={name} cannot be combined"):
            validate_compression(cfg)


def test_a_content_shared_by_messages_is_encoded_once_and_left_unchanged() -> None:
    local = LocalGrid(make_app(), 2)
    grid = CompressedGrid(MeteredGrid(local), Codec("int8"), Codec("int8", min_elements=1000))
    shared = train_messages(local, model(), 1)[0].content
    messages = [Message(shared, node, MessageType.TRAIN) for node in local.get_node_ids()]
    replies = list(grid.send_and_receive(messages))
    assert list(shared.array_records[keys.ARRAYS].keys()) == ["a", "b", "c"]
    assert keys.COMPRESSION not in shared.config_records
    assert all(keys.ARRAYS in r.content.array_records for r in replies)
    assert (
        messages[0].content.array_records[keys.ARRAYS]
        is messages[1].content.array_records[keys.ARRAYS]
    )


def test_integer_arrays_travel_as_they_are() -> None:
    app = ClientApp(mods=[compression_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        w, count = msg.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
        arrays = ArrayRecord({"w": Array(w + 1), "count": Array(count + 5)})
        metrics = MetricRecord({keys.NUM_EXAMPLES: 1})
        return Message(RecordDict({keys.ARRAYS: arrays, keys.METRICS: metrics}), reply_to=msg)

    local = LocalGrid(app, 1)
    grid = CompressedGrid(MeteredGrid(local), Codec("int8", min_elements=0), Codec("none"))
    weights = ArrayRecord(
        {"w": Array(np.zeros(2000, np.float32)), "count": Array(np.arange(2000, dtype=np.int64))}
    )
    config = ConfigRecord({keys.SERVER_ROUND: 1})
    message = Message(RecordDict({keys.ARRAYS: weights, keys.CONFIG: config}), 1, MessageType.TRAIN)
    (reply,) = grid.send_and_receive([message])
    w, count = reply.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
    np.testing.assert_allclose(w, 1.0, atol=1e-6)
    assert count.dtype == np.int64
    np.testing.assert_array_equal(count, np.arange(2000) + 5)
