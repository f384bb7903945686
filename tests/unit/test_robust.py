"""Robust aggregation plugins: same result as Flower's own strategies on identical replies."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import strategy as flower
from helpers import FakeGrid, make_reply

from fedflower import keys
from fedflower.errors import ConfigError
from fedflower.server import registry
from fedflower.server.registry import build_strategy

SHAPES = [(6, 4), (4,), (4, 2), (2,)]
pytestmark = pytest.mark.usefixtures("task_identity")

CASES = [
    ("krum", flower.Krum, {"num_malicious_nodes": 2}),
    ("multikrum", flower.MultiKrum, {"num_malicious_nodes": 2, "num_nodes_to_select": 4}),
    ("bulyan", flower.Bulyan, {"num_malicious_nodes": 2}),
    ("fedmedian", flower.FedMedian, {}),
    ("fedtrimmedavg", flower.FedTrimmedAvg, {"beta": 0.2}),
]


def model(rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def replies(
    strategy, nodes: Sequence[int], updates: list[list[np.ndarray]], flagged: Sequence[int] = ()
) -> list[Message]:
    """One reply per node to the strategy's own instruction, carrying ``updates[i]``."""
    msgs = strategy.configure_train(1, ArrayRecord(updates[0]), ConfigRecord(), FakeGrid(nodes))
    by_node = {m.metadata.dst_node_id: m for m in msgs}
    out = []
    for i, node in enumerate(nodes):
        reply = make_reply(by_node[node], updates[i], 10 + 7 * i, train_loss=0.1)
        if node in flagged:
            reply.content[keys.ATTACK] = ConfigRecord({keys.ATTACK_NAME: "sign_flip"})
        out.append(reply)
    return out


def client_updates(seed: int, n: int, outliers: int) -> list[list[np.ndarray]]:
    """``n`` updates around one model, the last ``outliers`` of them far away."""
    rng = np.random.default_rng(seed)
    center = model(rng)
    ups = [
        [c + 0.1 * rng.standard_normal(c.shape).astype(np.float32) for c in center]
        for _ in range(n)
    ]
    for u in ups[n - outliers :]:
        for a in u:
            a += np.float32(20.0) * rng.standard_normal(a.shape).astype(np.float32)
    return ups


@pytest.mark.parametrize(("name", "flower_cls", "options"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_global_model_as_flowers_strategy(name, flower_cls, options, seed) -> None:
    nodes = list(range(21, 32))  # 11 >= 4f+3 for f=2
    ups = client_updates(seed, len(nodes), outliers=2)
    ours = build_strategy({"name": name, "min_available_nodes": 1, **options})
    theirs = flower_cls(min_available_nodes=1, **options)
    got, _ = ours.aggregate_train(1, replies(ours, nodes, ups))
    want, _ = theirs.aggregate_train(1, replies(theirs, nodes, ups))
    assert got is not None and want is not None
    assert list(got.keys()) == list(want.keys())
    for g, w in zip(got.to_numpy_ndarrays(), want.to_numpy_ndarrays(), strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["krum", "multikrum", "bulyan"])
def test_selecting_rules_exclude_the_far_updates_and_report_them(name) -> None:
    nodes = list(range(1, 12))
    ups = client_updates(3, len(nodes), outliers=2)
    strategy = build_strategy({"name": name, "num_malicious_nodes": 2, "min_available_nodes": 1})
    arrays, _ = strategy.aggregate_train(1, replies(strategy, nodes, ups, flagged=[10, 11]))
    assert arrays is not None
    report = strategy.round_report()
    assert report["malicious_nodes"] == [10, 11]
    assert {10, 11} <= set(report["excluded_nodes"])
    assert report["malicious_excluded"] == 2
    assert strategy.run_report() == {"attack": {"malicious_updates": 2, "malicious_excluded": 2}}


def test_coordinate_wise_rules_report_malicious_nodes_but_no_exclusion() -> None:
    nodes = [1, 2, 3, 4, 5]
    strategy = build_strategy({"name": "fedmedian", "min_available_nodes": 1})
    strategy.aggregate_train(1, replies(strategy, nodes, client_updates(0, 5, 1), flagged=[5]))
    assert strategy.round_report() == {"malicious_nodes": [5]}


def test_too_few_replies_keep_the_global_model_with_one_warning(caplog) -> None:
    nodes = list(range(1, 8))  # 7 sampled = 4f+3 for f=1
    strategy = build_strategy(
        {"name": "bulyan", "num_malicious_nodes": 1, "min_available_nodes": 1}
    )
    msgs = replies(strategy, nodes, client_updates(0, len(nodes), 0))
    with caplog.at_level(logging.WARNING):
        arrays, _ = strategy.aggregate_train(1, msgs[:6])
    assert arrays is None
    assert (
        "bulyan needs at least 4*num_malicious_nodes+3 = 7 accepted updates, got 6" in caplog.text
    )


def test_a_federation_too_small_for_the_rule_fails_before_the_first_round() -> None:
    strategy = build_strategy({"name": "krum", "num_malicious_nodes": 2, "min_available_nodes": 1})
    with pytest.raises(ConfigError, match=r"krum needs at least .* = 7 updates .* samples 5 of 5"):
        strategy.configure_train(
            1, ArrayRecord(model(np.random.default_rng(0))), ConfigRecord(), FakeGrid(range(1, 6))
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"name": "krum", "num_malicious_nodes": -1},
            "strategy.num_malicious_nodes must be an integer >= 0, got -1",
        ),
        (
            {"name": "multikrum", "num_nodes_to_select": 0},
            "strategy.num_nodes_to_select must be an integer >= 1, got 0",
        ),
        (
            {"name": "fedtrimmedavg", "beta": 0.5},
            r"strategy.beta must be a number in \[0, 0.5\), got 0.5",
        ),
    ],
)
def test_bad_options_are_config_errors(options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_strategy(options)


def test_median_of_an_integer_layer_keeps_the_models_dtype() -> None:
    nodes = [1, 2, 3, 4]
    ups = [
        [np.full((2,), v, dtype=np.int64), np.full((3,), v, dtype=np.float32)] for v in (1, 2, 3, 4)
    ]
    strategy = build_strategy({"name": "fedmedian", "min_available_nodes": 1})
    arrays, _ = strategy.aggregate_train(1, replies(strategy, nodes, ups))
    assert [a.dtype for a in arrays.to_numpy_ndarrays()] == [np.int64, np.float32]


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_plugins_are_registered(name) -> None:
    assert registry.load(name).rule == name
