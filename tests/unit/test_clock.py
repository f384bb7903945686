"""fedflower.engine.clock: virtual time ordering, synchronous rounds, timeouts, the wall clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from omegaconf import DictConfig

from fedflower import keys
from fedflower.engine.clock import Clock, VirtualClockGrid, WallClock, build_latency
from fedflower.engine.latency import Constant, LatencyModel
from fedflower.engine.local import LocalGrid
from fedflower.engine.metered import MeteredGrid
from fedflower.errors import ConfigError

# node n (partition n - 1) has 10 * n examples: with one second per example, 10 n seconds
SECONDS = LatencyModel(Constant(), seconds_per_example=1.0, latency_s=0.0, bandwidth_mbps=1e9)


pytestmark = pytest.mark.usefixtures("task_identity")


def echo_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: object) -> Message:
        p = int(context.node_config[keys.PARTITION_ID])  # type: ignore[attr-defined]
        arrays = msg.content.array_records[keys.ARRAYS]
        metrics = MetricRecord({keys.NUM_EXAMPLES: 10 * (p + 1)})
        return Message(RecordDict({keys.ARRAYS: arrays, keys.METRICS: metrics}), reply_to=msg)

    return app


def train_message(node: int, epochs: int = 1) -> Message:
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord([np.zeros(4, dtype=np.float32)]),
            keys.CONFIG: ConfigRecord({keys.LOCAL_EPOCHS: epochs}),
        }
    )
    return Message(content, dst_node_id=node, message_type=MessageType.TRAIN)


def nodes_of(replies: Iterable[Message]) -> list[int]:
    return [r.metadata.src_node_id for r in replies]


def test_replies_come_in_virtual_finish_order() -> None:
    grid = VirtualClockGrid(LocalGrid(echo_app(), 3), SECONDS)
    ids = list(grid.push_messages([train_message(3), train_message(1), train_message(2)]))
    assert list(grid.pull_messages(ids)) == []  # nothing has finished at t = 0
    order = []
    while ids:
        grid.wait(ids)
        replies = list(grid.pull_messages(ids))
        order += [(grid.now, n) for n in nodes_of(replies)]
        done = {r.metadata.reply_to_message_id for r in replies}
        ids = [i for i in ids if i not in done]
    assert [n for _, n in order] == [1, 2, 3]
    assert [t for t, _ in order] == pytest.approx([10.0, 20.0, 30.0])


def test_epochs_and_start_time_set_the_finish_time() -> None:
    grid = VirtualClockGrid(LocalGrid(echo_app(), 2), SECONDS)
    (first,) = grid.push_messages([train_message(1, epochs=3)])  # 30 s
    grid.wait([first])
    assert grid.now == pytest.approx(30.0)
    (second,) = grid.push_messages([train_message(2)])  # starts at 30, lasts 20
    assert grid.finish_time(second) == pytest.approx(50.0)
    grid.wait([second])
    assert nodes_of(grid.pull_messages([first, second])) == [1, 2]


def test_a_synchronous_round_lasts_as_long_as_its_slowest_client() -> None:
    grid = VirtualClockGrid(LocalGrid(echo_app(), 4), SECONDS)
    replies = list(grid.send_and_receive([train_message(n) for n in (2, 4, 1)]))
    assert sorted(nodes_of(replies)) == [1, 2, 4]
    assert grid.now == pytest.approx(40.0)
    grid.send_and_receive([train_message(1)])
    assert grid.now == pytest.approx(50.0)


def test_a_meter_around_the_clock_counts_what_a_meter_alone_counts() -> None:
    timed = MeteredGrid(VirtualClockGrid(LocalGrid(echo_app(), 2), SECONDS))
    metered = MeteredGrid(LocalGrid(echo_app(), 2))
    for grid in (timed, metered):
        grid.send_and_receive([train_message(1), train_message(2)])
    assert timed.round_report() == metered.round_report() == {"train_clients": 2}
    assert timed.take() == metered.take()
    assert timed.bytes_down == 0


def test_replies_are_metered_when_the_clock_releases_them() -> None:
    clock = VirtualClockGrid(LocalGrid(echo_app(), 2), SECONDS)
    meter = MeteredGrid(clock)
    ids = list(meter.push_messages([train_message(1), train_message(2)]))
    clock.wait(ids)  # t = 10: node 1's reply only
    assert len(list(meter.pull_messages(ids))) == 1
    first = meter.bytes_up
    clock.wait(ids)
    meter.pull_messages(ids)
    assert 0 < first < meter.bytes_up


def test_transfer_time_uses_the_measured_bytes() -> None:
    latency = LatencyModel(Constant(), seconds_per_example=0.0, latency_s=0.5, bandwidth_mbps=0.001)
    clock = VirtualClockGrid(LocalGrid(echo_app(), 1), latency)
    grid = MeteredGrid(clock)
    grid.send_and_receive([train_message(1)])
    down, up = grid.take()
    assert clock.now == pytest.approx(1.0 + 8 * (down + up) / 1000.0)
    assert clock.round_report() == {"virtual_time": clock.now}


class SilentGrid(LocalGrid):
    """Node 2 never replies."""

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = super().pull_messages(message_ids)
        return [r for r in replies if r.metadata.src_node_id != 2]


def test_a_missing_reply_becomes_an_error_after_the_timeout() -> None:
    grid = VirtualClockGrid(SilentGrid(echo_app(), 2), SECONDS, poll_interval=0.001)
    ids = list(grid.push_messages([train_message(2), train_message(1)]))
    grid.wait(ids, timeout=0.01)
    replies = list(grid.pull_messages(ids))
    assert nodes_of(replies) == [2]  # the synthesized error "arrives" first
    assert replies[0].has_error()
    assert "no reply" in replies[0].error.reason


def test_the_virtual_clock_is_a_clock() -> None:
    assert isinstance(VirtualClockGrid(LocalGrid(echo_app(), 1), SECONDS), Clock)
    assert not isinstance(MeteredGrid(LocalGrid(echo_app(), 1)), Clock)


def test_wall_clock_counts_from_creation_and_sleeps_one_poll() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    clock = WallClock(0.25, time_fn=lambda: now[0], sleep_fn=sleep)
    assert clock.now == 0.0
    clock.wait(["a"])
    assert slept == [0.25] and clock.now == 0.25


def test_build_latency_from_config() -> None:
    options = {
        "_target_": "fedflower.engine.latency.LatencyModel",
        "slowdown": {"_target_": "fedflower.engine.latency.LogNormal", "sigma": 1.0},
        "seed": 3,
    }
    model = build_latency(options)
    assert isinstance(model, LatencyModel) and model.seed == 3
    assert build_latency({"enabled": False}) is None
    bad = {**options, "slowdown": {"_target_": "fedflower.engine.latency.LogNormal", "sigma": -2}}
    with pytest.raises(ConfigError, match=r"slowdown\.sigma must be a number >= 0, got -2"):
        build_latency(bad)


@pytest.mark.parametrize("option", ["constant", "uniform", "lognormal", "pareto", "none"])
def test_every_latency_option_builds(make_cfg: Callable[..., DictConfig], option: str) -> None:
    cfg = make_cfg([f"latency={option}", "seed=5"])
    model = build_latency(cfg.latency)
    if option == "none":
        assert model is None
        return
    assert isinstance(model, LatencyModel) and model.seed == 5
    slowdowns = [model.client_slowdown(n) for n in range(1, 50)]
    assert min(slowdowns) > 0
    assert (len(set(slowdowns)) == 1) == (option == "constant")


def test_a_restored_clock_replays_tasks_in_flight_with_their_times_unmetered() -> None:
    """Tasks pushed again after a restore finish when they would have, bytes counted once."""
    jittered = LatencyModel(
        Constant(), seconds_per_example=1.0, latency_s=0.0, bandwidth_mbps=1e9, jitter=0.5
    )
    clock = VirtualClockGrid(LocalGrid(echo_app(), 3), jittered)
    grid = MeteredGrid(clock)
    first = list(grid.push_messages([train_message(1), train_message(3)]))
    clock.wait(first)
    (done,) = grid.pull_messages(first)
    (second,) = grid.push_messages([train_message(2)])
    in_flight = [i for i in (*first, second) if i != done.metadata.reply_to_message_id]
    state, meter = clock.state_dict(), grid.state_dict()
    assert meter["bytes"][0] > 0 and meter["train_tasks"] == 3
    assert set(state["tasks"]) >= set(in_flight)
    finish = {i: clock.finish_time(i) for i in in_flight}

    restored = VirtualClockGrid(LocalGrid(echo_app(), 3), jittered)
    metered = MeteredGrid(restored)
    restored.load_state_dict(state)
    metered.load_state_dict(meter)
    restored.replay(in_flight)
    nodes = {first[1]: 3, second: 2}
    again = list(metered.push_messages([train_message(nodes[i]) for i in in_flight]))
    assert metered.state_dict() == meter  # neither bytes nor tasks counted a second time
    assert [restored.finish_time(i) for i in again] == [finish[i] for i in in_flight]
    (new,) = metered.push_messages([train_message(1)])  # a new task continues the count
    assert restored._tasks[new].seq == state["seq"] + 1
    assert metered.bytes_down > meter["bytes"][0] and metered.train_tasks == 4
