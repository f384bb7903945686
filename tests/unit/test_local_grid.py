"""fedflower.engine.local.LocalGrid: contexts exist only while a node runs or keeps state."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from helpers import metered_round

from fedflower import keys
from fedflower.engine.local import LocalGrid, serve

pytestmark = pytest.mark.usefixtures("task_identity")


def counting_app(keep_state: set[int]) -> ClientApp:
    """Replies with its partition id and how often it ran; nodes in ``keep_state`` count."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config[keys.PARTITION_ID])
        seen = context.state.config_records.get("seen", ConfigRecord({"n": 0}))
        count = int(seen["n"]) + 1  # type: ignore[call-overload]
        if pid in keep_state:
            context.state["seen"] = ConfigRecord({"n": count})
        metrics = MetricRecord({"pid": pid, "count": count, keys.NUM_EXAMPLES: 1})
        return Message(RecordDict({keys.METRICS: metrics}), reply_to=msg)

    return app


def message(node: int) -> Message:
    content = RecordDict({keys.ARRAYS: ArrayRecord([np.zeros(2, dtype=np.float32)])})
    return Message(content, dst_node_id=node, message_type=MessageType.TRAIN)


def run_round(grid: LocalGrid, nodes: list[int]) -> list[tuple[int, int]]:
    replies = grid.send_and_receive([message(n) for n in nodes])
    return [(int(r.content["metrics"]["pid"]), int(r.content["metrics"]["count"])) for r in replies]  # type: ignore[call-overload]


def test_a_hundred_thousand_nodes_hold_no_context() -> None:
    grid = LocalGrid(counting_app(set()), 100_000)
    assert len(grid.get_node_ids()) == 100_000  # type: ignore[arg-type]
    assert run_round(grid, [1, 100_000]) == [(0, 1), (99_999, 1)]
    assert grid._contexts == {}


def test_state_survives_rounds_only_for_nodes_that_keep_some() -> None:
    grid = LocalGrid(counting_app({1}), 5)
    for expected in (1, 2, 3):
        assert run_round(grid, [2, 3]) == [(1, expected), (2, 1)]
    assert list(grid._contexts) == [2]


def test_node_configs_and_run_config_reach_the_context() -> None:
    seen: list[tuple[dict, dict]] = []
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        seen.append((dict(context.node_config), dict(context.run_config)))
        return Message(
            RecordDict({keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 1})}), reply_to=msg
        )

    grid = LocalGrid(app, 2, [{"data-path": "a.csv"}, {"data-path": "b.csv"}], {"k": "v"})
    grid.send_and_receive([message(2)])
    assert seen == [({"data-path": "b.csv"}, {"k": "v"})]


def test_unknown_node_is_refused() -> None:
    grid = LocalGrid(counting_app(set()), 3)
    with pytest.raises(ValueError, match="no node with id 4"):
        grid.push_messages([message(4)])


def test_metering_counts_the_bytes_the_engine_serialized_once() -> None:
    from fedflower.engine import metered

    grid = LocalGrid(counting_app(set()), 3)
    # the sizes the engine recorded while serializing are the serialized sizes, and asked once
    meter = metered_round(grid, [message(n) for n in (1, 2, 3)])
    calls = []
    original = metered.message_nbytes
    metered.message_nbytes = lambda m: calls.append(m) or original(m)  # type: ignore[assignment,func-returns-value]
    try:
        meter.send_and_receive([message(1)])
    finally:
        metered.message_nbytes = original  # type: ignore[assignment]
    assert calls == []  # nothing serialized a second time to be metered


def test_a_run_keeps_the_objects_made_before_it_out_of_full_collections() -> None:
    """The objects alive when the run starts are frozen while it runs, and only those: the
    run's own garbage is collected, and the freeze ends with the run; a caller's own freeze
    is left to the caller."""
    seen: list[tuple[int, int]] = []
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cycle: list[object] = []
        cycle.append(cycle)  # garbage only a collection frees
        del cycle
        seen.append((gc.get_freeze_count(), gc.collect()))

    assert gc.get_freeze_count() == 0
    serve(app, LocalGrid(ClientApp(), 1))
    frozen, collected = seen[0]
    assert frozen > 10_000 and collected >= 1
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        serve(app, LocalGrid(ClientApp(), 1))
        assert seen[1][0] == before and gc.get_freeze_count() == before
    finally:
        gc.unfreeze()
