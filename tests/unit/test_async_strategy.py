"""The asynchronous server loop (FedBuff, FedAsync) on numeric fake clients.

Clients here are tiny ClientApps whose "training" is a fixed function of the model they get
(``w -> 0.5 w + (p + 1)`` for partition ``p``) and who report ``10 (p + 1)`` examples; with one
virtual second per example, node ``n`` takes ``10 n`` virtual seconds per task. The loop is the
real one (LocalGrid, message serialization, VirtualClockGrid or the wall-clock path).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fedflower.strategies.fedasync import FedAsync
from fedflower.strategies.fedavg import FedAvg
from fedflower.strategies.fedbuff import FedBuff
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import Strategy

from fedflower import keys
from fedflower.engine.clock import WallClock
from fedflower.engine.latency import Constant, LatencyModel, LogNormal
from fedflower.engine.local import LocalGrid
from fedflower.errors import ConfigError
from fedflower.server.async_strategy import AsyncStrategy, ClientUpdate
from fedflower.server.pipeline import Pipeline, build_pipeline
from fedflower.server.registry import build_strategy

SHAPES = [(3, 2), (2,)]
SECONDS = LatencyModel(Constant(), seconds_per_example=1.0, latency_s=0.0, bandwidth_mbps=1e9)


pytestmark = pytest.mark.usefixtures("task_identity")


def local_training(arrays: list[np.ndarray], p: int) -> list[np.ndarray]:
    return [(0.5 * a + (p + 1)).astype(a.dtype) for a in arrays]


def numeric_app(fail: Iterable[int] = ()) -> ClientApp:
    """A ClientApp whose partitions in ``fail`` raise mid-training."""
    failing = set(fail)
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        p = int(context.node_config[keys.PARTITION_ID])
        if p in failing:
            raise RuntimeError(f"client {p} crashed")
        arrays = msg.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
        metrics = MetricRecord({keys.NUM_EXAMPLES: 10 * (p + 1), keys.TRAIN_LOSS: float(p)})
        content = RecordDict(
            {keys.ARRAYS: ArrayRecord(local_training(arrays, p)), keys.METRICS: metrics}
        )
        return Message(content, reply_to=msg)

    return app


def initial(seed: int = 0) -> ArrayRecord:
    rng = np.random.default_rng(seed)
    return ArrayRecord([rng.standard_normal(s).astype(np.float32) for s in SHAPES])


class Log:
    """An ``evaluate_fn`` that records the model, the virtual time and the strategy's report."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.rows: list[dict[str, Any]] = []

    def __call__(self, version: int, arrays: ArrayRecord) -> MetricRecord:
        row = self.pipeline.round_report()
        row.update(version=version, arrays=arrays.to_numpy_ndarrays())
        self.rows.append(row)
        return MetricRecord({"version": version})


def run(
    strategy: AsyncStrategy,
    num_nodes: int,
    num_rounds: int,
    latency: LatencyModel | None = SECONDS,
    fail: Iterable[int] = (),
) -> tuple[Log, Any]:
    pipeline = wrapped(LocalGrid(numeric_app(fail), num_nodes), strategy, latency)
    log = Log(pipeline)
    result = strategy.start(
        pipeline.grid, initial(), num_rounds=num_rounds, evaluate_fn=log, clock=pipeline.clock
    )
    log.result = result  # type: ignore[attr-defined]
    return log, pipeline.clock


def wrapped(grid: Any, strategy: AsyncStrategy, latency: LatencyModel | None) -> Pipeline:
    """The run's wrappers as a simulation stacks them: the meter around the virtual clock."""
    return build_pipeline(
        grid, strategy, latency=latency, compression=None, client_options={}, seed=0
    )


def assert_arrays_close(a: Sequence[np.ndarray], b: Sequence[np.ndarray], **tol: float) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, **({"rtol": 1e-6, "atol": 1e-6} | tol))


# -- equivalences ----------------------------------------------------------------------------
def fedavg_rounds(num_nodes: int, rounds: int) -> list[list[np.ndarray]]:
    """The global model after each of ``rounds`` FedAvg rounds over all nodes."""
    fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=num_nodes)
    grid = LocalGrid(numeric_app(), num_nodes)
    models: list[list[np.ndarray]] = []

    def keep(server_round: int, arrays: ArrayRecord) -> None:
        if server_round > 0:
            models.append(arrays.to_numpy_ndarrays())

    fedavg.start(grid, initial(), num_rounds=rounds, evaluate_fn=keep)
    return models


def test_fedbuff_k_equal_concurrency_equal_n_is_fedavg_in_every_round() -> None:
    # equally fast clients: all N replies of a wave arrive at the same virtual time and are
    # all folded before any slot is refilled, so every wave trains from the newest model
    # (refilling after each reply would start N - 1 tasks of the next wave from the old one)
    n, rounds = 4, 4
    equal = LatencyModel(Constant(), seconds_per_example=0.0, latency_s=1.0)
    fedbuff = FedBuff(concurrency=n, buffer_size=n, staleness="constant", server_lr=1.0)
    log, _ = run(fedbuff, n, num_rounds=rounds, latency=equal)
    assert fedbuff.totals["folded"] == n * rounds
    assert [r["staleness_max"] for r in log.rows[1:]] == [0] * rounds
    for row, want in zip(log.rows[1:], fedavg_rounds(n, rounds), strict=True):
        assert_arrays_close(row["arrays"], want)
    # and against the formula: example-weighted mean of 0.5 w + (p + 1)
    weights = [10 * (p + 1) for p in range(n)]
    x = initial().to_numpy_ndarrays()
    for row in log.rows[1:]:
        x = [sum(w * (0.5 * a + p + 1) for p, w in enumerate(weights)) / sum(weights) for a in x]
        assert_arrays_close(row["arrays"], x)


def test_an_async_strategy_has_no_rounds_for_flowers_loop() -> None:
    fedbuff = FedBuff(concurrency=3, buffer_size=3)
    with pytest.raises(NotImplementedError, match=r"^FedBuff has no rounds: it runs its own"):
        Strategy.start(fedbuff, LocalGrid(numeric_app(), 3), initial(), num_rounds=1)


def test_fedasync_with_one_client_follows_the_mixing_formula() -> None:
    alpha = 0.3
    fedasync = FedAsync(concurrency=1, alpha=alpha, staleness="constant")
    log, _ = run(fedasync, 1, num_rounds=3)
    x = initial().to_numpy_ndarrays()
    for row in log.rows[1:]:
        x = [(1 - alpha) * a + alpha * c for a, c in zip(x, local_training(x, 0), strict=True)]
        assert row["staleness_mean"] == 0.0
        assert_arrays_close(row["arrays"], x)


# -- virtual time, staleness, drops ----------------------------------------------------------
def test_updates_are_folded_in_virtual_time_order_with_their_staleness() -> None:
    # nodes 1, 2, 3 take 10, 20, 30 s. Timeline (version after the fold):
    # t=10 node 1 (from v0, tau 0) -> v1, node 1 restarts from v1
    # t=20 node 2 (v0, tau 1) -> v2; node 1 (v1, tau 1) -> v3  [ties: dispatch order]
    # t=30 node 3 (v0, tau 3) -> v4; node 1 (v3, tau 1) -> v5
    fedasync = FedAsync(concurrency=3, alpha=0.5, staleness="constant")
    log, grid = run(fedasync, 3, num_rounds=5)
    rows = log.rows[1:]
    assert [r["version"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["staleness_max"] for r in rows] == [0, 1, 1, 3, 1]
    assert [r["virtual_time"] for r in rows] == pytest.approx([10, 20, 20, 30, 30])
    assert grid.now == pytest.approx(30.0)


def test_stale_updates_beyond_max_staleness_are_dropped_and_counted() -> None:
    fedasync = FedAsync(concurrency=3, alpha=0.5, staleness="constant", max_staleness=0)
    log, _ = run(fedasync, 3, num_rounds=4)
    dropped = sum(r.get("dropped", 0) for r in log.rows)
    assert dropped == fedasync.totals["dropped"] > 0
    assert all(r["staleness_max"] == 0 for r in log.rows[1:])
    t = fedasync.totals
    assert t["folded"] == 4
    # every dispatched task was folded, dropped or was still running at the end
    assert t["tasks"] == t["folded"] + t["dropped"] + t["failed"] + t["unfinished"]
    assert t["unfinished"] == 2  # the slot freed by the last update is not refilled


def test_fedbuff_staleness_weights_the_buffer() -> None:
    # same timeline as above with K = 2: v1 = {node 1 (tau 0), node 2 (tau 0)} at t=20
    s = {"name": "polynomial", "a": 1.0}
    fedbuff = FedBuff(concurrency=3, buffer_size=2, staleness=s, weighted=False)
    log, _ = run(fedbuff, 3, num_rounds=2)
    x0 = initial().to_numpy_ndarrays()
    v1 = [a + ((0.5 * a + 1 - a) + (0.5 * a + 2 - a)) / 2 for a in x0]
    assert_arrays_close(log.rows[1]["arrays"], v1)
    # v2 at t=30: node 1 restarted from v0 at t=10 (tau 1, weight 1/2), node 3 from v0 (tau 1)
    assert log.rows[2]["staleness_max"] == 1
    v2 = [
        b + 0.5 * ((0.5 * a + 1 - a) + (0.5 * a + 3 - a)) / 2 for a, b in zip(x0, v1, strict=True)
    ]
    assert_arrays_close(log.rows[2]["arrays"], v2)


def test_full_async_simulation_is_deterministic() -> None:
    def once() -> list[dict[str, Any]]:
        fedbuff = FedBuff(concurrency=3, buffer_size=2, seed=7)
        log, _ = run(fedbuff, 5, num_rounds=6, latency=LatencyModel(LogNormal(1.0), seed=7))
        return log.rows

    first, second = once(), once()
    assert len(first) == len(second) == 7
    for a, b in zip(first, second, strict=True):
        assert {k: v for k, v in a.items() if k != "arrays"} == {
            k: v for k, v in b.items() if k != "arrays"
        }
        for x, y in zip(a["arrays"], b["arrays"], strict=True):
            np.testing.assert_array_equal(x, y)


def test_evaluate_every_n_versions_and_after_the_last() -> None:
    fedasync = FedAsync(concurrency=2, evaluate_every=2)
    log, _ = run(fedasync, 2, num_rounds=5)
    assert [r["version"] for r in log.rows] == [0, 2, 4, 5]
    assert sorted(log.result.train_metrics_clientapp) == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]


# -- failures --------------------------------------------------------------------------------
def test_a_client_that_fails_mid_training_does_not_stall_the_server() -> None:
    fedbuff = FedBuff(concurrency=3, buffer_size=2)
    log, _ = run(fedbuff, 3, num_rounds=4, fail=[1])  # node 2 raises every time
    assert [r["version"] for r in log.rows] == [0, 1, 2, 3, 4]
    t = fedbuff.totals
    assert t["folded"] == 8
    # the crashing node is retried after every accepted reply (once at the start, then after
    # each of the first 7 accepted ones), and every task is accounted for
    assert t["failed"] == 8
    assert t["tasks"] == t["folded"] + t["failed"] + t["unfinished"]


def test_the_loop_stops_when_every_client_fails() -> None:
    fedasync = FedAsync(concurrency=2)
    log, _ = run(fedasync, 2, num_rounds=3, fail=[0, 1])
    assert fedasync.version == 0 and [r["version"] for r in log.rows] == [0]
    assert fedasync.totals["failed"] == 2  # each node once, then the run gives up


# -- wall clock (deployments) ----------------------------------------------------------------
class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ArrivalGrid(LocalGrid):
    """A real-grid stand-in: replies become visible ``delay[node]`` fake seconds after the push;
    nodes in ``joins`` connect only at the given time."""

    def __init__(
        self,
        app: ClientApp,
        num_nodes: int,
        clock: FakeTime,
        delay: dict[int, float],
        joins: dict[int, float] | None = None,
    ) -> None:
        super().__init__(app, num_nodes)
        self.clock, self.delay, self.joins = clock, delay, joins or {}
        self.ready: dict[str, float] = {}

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in super().get_node_ids() if self.joins.get(n, 0.0) <= self.clock.now]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        ids = list(super().push_messages(messages))
        for i, m in zip(ids, messages, strict=True):
            self.ready[i] = self.clock.now + self.delay[m.metadata.dst_node_id]
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        due = sorted(
            (i for i in message_ids if self.ready.get(i, np.inf) <= self.clock.now),
            key=lambda i: self.ready[i],
        )
        return super().pull_messages(due)


class Recording(FedAsync):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folded_nodes: list[int] = []

    def fold(self, update: ClientUpdate) -> list[np.ndarray] | None:
        self.folded_nodes.append(update.node_id)
        return super().fold(update)


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()

    def wall_clock(poll_interval: float) -> WallClock:
        return WallClock(poll_interval, time_fn=fake.time, sleep_fn=fake.sleep)

    monkeypatch.setattr("fedflower.server.async_strategy.WallClock", wall_clock)
    return fake


def test_wall_clock_folds_replies_in_arrival_order(fake_time: FakeTime) -> None:
    grid = ArrivalGrid(numeric_app(), 2, fake_time, delay={1: 1.0, 2: 2.5})
    strategy = Recording(concurrency=2, staleness="constant", poll_interval=0.1)
    strategy.start(grid, initial(), num_rounds=5)
    # node 1 arrives at 1, 2, 3; node 2 at 2.5; node 1 at 4 (ties do not occur)
    assert strategy.folded_nodes == [1, 1, 2, 1, 1]


def test_wall_clock_gives_up_on_a_silent_node_and_feeds_a_late_joiner(fake_time: FakeTime) -> None:
    delay = {1: 1.0, 2: np.inf, 3: 1.0}  # node 2 was killed mid-training
    grid = ArrivalGrid(numeric_app(), 3, fake_time, delay, joins={3: 5.0})
    strategy = Recording(concurrency=2, staleness="constant", poll_interval=0.5)
    strategy.start(grid, initial(), num_rounds=12, timeout=10.0)
    assert strategy.version == 12
    assert strategy.totals["failed"] >= 1  # node 2's task was abandoned after 10 s
    assert 3 in strategy.folded_nodes  # the late joiner got work


def test_a_dead_node_loses_its_slot_at_the_task_deadline(fake_time: FakeTime) -> None:
    # node 1 was killed: it never answers. Node 2 answers after 1 s. Timeline with a 2.5 s
    # task deadline (polls every 0.5 s): node 1's first task expires at t = 3 (failed, rests),
    # node 2's reply at t = 4 wakes it and it gets a second task, still running at the end
    def once(task_timeout: float | None) -> Recording:
        grid = ArrivalGrid(numeric_app(), 2, fake_time, delay={1: np.inf, 2: 1.0})
        strategy = Recording(concurrency=2, poll_interval=0.5, task_timeout=task_timeout)
        strategy.start(grid, initial(), num_rounds=6, timeout=3600)
        return strategy

    fake_time.now = 0.0
    timed = once(2.5)
    assert fake_time.now == pytest.approx(6.0)
    assert timed.folded_nodes == [2] * 6
    t = timed.totals
    assert (t["failed"], t["tasks"], t["unfinished"]) == (1, 8, 1)
    assert timed.rejected == 1 and timed.run_report()["async"]["failed"] == 1
    # without a deadline node 1 holds its slot for the whole run (Flower's 3600 s timeout)
    fake_time.now = 0.0
    held = once(None)
    assert held.totals["failed"] == 0 and held.totals["tasks"] == 7


def test_a_task_past_its_virtual_deadline_is_failed_and_its_node_rested() -> None:
    # nodes 1, 2, 3 take 10, 20, 30 virtual s; node 3 can never meet a 25 s deadline: its
    # reply (t = 30) is counted as failed, not folded; the others fold as usual
    fedasync = Recording(concurrency=3, staleness="constant", task_timeout=25.0)
    log, grid = run(fedasync, 3, num_rounds=4)
    assert fedasync.folded_nodes == [1, 2, 1, 1]
    assert fedasync.totals["failed"] == 1 and fedasync.rejected == 1
    assert sum(r.get("failed", 0) for r in log.rows) == 1
    assert grid.now == pytest.approx(30.0)


def test_a_client_exception_is_counted_as_the_synchronous_path_counts_it() -> None:
    # node 2 raises in every task: FedAvg counts one rejected update per round; FedBuff counts
    # each failed task per version (round_report), in its totals and in ``rejected``
    fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=3)
    fedavg.start(LocalGrid(numeric_app(fail=[1]), 3), initial(), num_rounds=2)
    assert fedavg.rejected == 2
    fedbuff = FedBuff(concurrency=3, buffer_size=2)
    log, _ = run(fedbuff, 3, num_rounds=2, fail=[1])
    failed = sum(r.get("failed", 0) for r in log.rows)
    assert failed == fedbuff.totals["failed"] == fedbuff.run_report()["async"]["failed"] > 0
    assert fedbuff.rejected == failed


class ThreadGrid(LocalGrid):
    """Clients run in background threads; replies appear when their thread finishes."""

    def __init__(self, app: ClientApp, num_nodes: int) -> None:
        super().__init__(app, num_nodes)
        self.pool = ThreadPoolExecutor(max_workers=num_nodes)
        self.futures: dict[str, Future[Message]] = {}
        self.lock = threading.Lock()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            with self.lock:
                self._next_id += 1
                message_id = f"m{self._next_id}"
            message.metadata.__dict__["_message_id"] = message_id
            node = message.metadata.dst_node_id

            def work(m: Message = message, node: int = node) -> Message:
                time.sleep(0.002 * node)
                with self.lock:  # Keras-free, but Flower's serialization is not thread-safe
                    return self._execute(m)

            self.futures[message_id] = self.pool.submit(work)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        done = [i for i in message_ids if i in self.futures and self.futures[i].done()]
        return [self.futures.pop(i).result() for i in done]


def test_real_threads_real_clock_run_to_completion() -> None:
    grid = ThreadGrid(numeric_app(fail=[2]), 4)
    strategy = FedBuff(concurrency=3, buffer_size=2, poll_interval=0.001)
    try:
        result = strategy.start(grid, initial(), num_rounds=4, timeout=30)
    finally:
        grid.pool.shutdown(wait=True)
    assert strategy.version == 4 and strategy.totals["folded"] == 8
    assert len(result.arrays) == len(SHAPES)


# -- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"name": "fedbuff", "buffer_size": 0}, "buffer_size must be an integer >= 1, got 0"),
        ({"name": "fedbuff", "concurrency": 0}, "concurrency must be an integer >= 1, got 0"),
        (
            {"name": "fedbuff", "server_momentum": 1.0},
            r"server_momentum must be a number in \[0, 1\)",
        ),
        (
            {"name": "fedbuff", "server_optimizer": {"name": "lamb"}},
            "server_optimizer.name must be one of sgd",
        ),
        ({"name": "fedbuff", "staleness": "linear"}, "staleness.name must be one of constant"),
        ({"name": "fedasync", "alpha": 0.0}, r"alpha must be a number in \(0, 1\], got 0.0"),
        ({"name": "fedasync", "max_staleness": -1}, "max_staleness must be an integer >= 0"),
        ({"name": "fedbuff", "task_timeout": 0}, "task_timeout must be a number > 0 or null"),
        ({"name": "fedasync", "poll_interval": 0}, "poll_interval must be a number > 0, got 0"),
        ({"name": "fedasync", "buffer_size": 3}, "has no option buffer_size; its options:"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_strategy(options)


def test_fedbuff_with_a_server_optimizer_runs() -> None:
    fedbuff = FedBuff(concurrency=2, buffer_size=2, server_optimizer={"name": "adam", "eta": 0.1})
    log, _ = run(fedbuff, 2, num_rounds=2)
    assert [r["version"] for r in log.rows] == [0, 1, 2]
    first, last = log.rows[0]["arrays"], log.rows[2]["arrays"]
    assert min(np.abs(a - b).max() for a, b in zip(last, first, strict=True)) > 0


# -- checkpoint and resume -------------------------------------------------------------------
RESUMED = {
    "fedbuff": lambda: FedBuff(concurrency=3, buffer_size=2, server_momentum=0.5, seed=7),
    "fedasync": lambda: FedAsync(concurrency=3, seed=7),
}


@pytest.mark.parametrize("name", sorted(RESUMED))
def test_resuming_from_every_version_continues_bit_identically(name: str, tmp_path: Any) -> None:
    """Checkpoints after every version; resumed from each one, the rest of the run is equal."""
    import shutil

    from fedflower.server.checkpoint import FILENAME, Checkpointer, load

    latency = LatencyModel(LogNormal(1.0), seed=7, jitter=0.5)
    versions = 8

    def start(out: Any, resume: bool) -> tuple[Log, AsyncStrategy]:
        strategy = RESUMED[name]()
        pipeline = wrapped(LocalGrid(numeric_app(), 5), strategy, latency)
        log = Log(pipeline)
        objects = pipeline.stateful()
        checkpoint = Checkpointer(out, {}, every=1, objects=objects, resume=resume)
        strategy.start(
            pipeline.grid,
            initial(),
            versions,
            evaluate_fn=log,
            checkpoint=checkpoint,
            clock=pipeline.clock,
        )
        return log, strategy

    kept: dict[int, Any] = {}
    original = Checkpointer.save

    def keep(
        self: Checkpointer, server_round: int, arrays: ArrayRecord, last: bool = False
    ) -> None:
        original(self, server_round, arrays, last)
        kept[server_round] = shutil.copy(self.path, self.path.with_name(f"v{server_round}.npz"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Checkpointer, "save", keep)
        full, _ = start(tmp_path, resume=False)
    assert sorted(kept) == list(range(1, versions + 1))
    in_flight = [len(load(kept[k])["objects"]["strategy0"]["table"]["tasks"]) for k in kept]
    assert min(in_flight) >= 1  # every checkpoint has tasks to re-issue
    for k in range(1, versions):
        out = tmp_path / f"from{k}"
        out.mkdir()
        shutil.copy(kept[k], out / FILENAME)
        resumed, strategy = start(out, resume=True)
        assert strategy.version == versions
        assert [r["version"] for r in resumed.rows] == list(range(k + 1, versions + 1))
        for want, got in zip(full.rows[k + 1 :], resumed.rows, strict=True):
            assert {x: v for x, v in got.items() if x != "arrays"} == {
                x: v for x, v in want.items() if x != "arrays"
            }
            for a, b in zip(want["arrays"], got["arrays"], strict=True):
                np.testing.assert_array_equal(a, b)
