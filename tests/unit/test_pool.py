"""fedflower.engine.pool: worker processes, shared memory, replies in order, clean shutdown."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import psutil
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from helpers import answer, metered_round, task, worker_that_exits_at_once

from fedflower import keys
from fedflower.engine import pool as pool_module
from fedflower.engine.pool import (
    PoolGrid,
    SegmentStore,
    WorkerPool,
    block_size,
    check_backends,
    check_workers,
    default_workers,
    worker_backends,
    worker_cpus,
)
from fedflower.errors import ConfigError


def stateful_app() -> ClientApp:
    """Replies with its partition id, its process id, how often it ran and the model's sum.

    Sleeps ``sleep`` seconds, or computes for ``spin`` CPU seconds, first if the message's
    config says so.
    """
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        config = msg.content.config_records.get(keys.CONFIG, ConfigRecord())
        time.sleep(float(config.get("sleep", 0.0)))  # type: ignore[arg-type]
        until = time.process_time() + float(config.get("spin", 0.0))  # type: ignore[arg-type]
        while time.process_time() < until:
            pass
        if context.node_config[keys.PARTITION_ID] == 4:
            raise ValueError("broken client")
        seen = context.state.config_records.get("seen", ConfigRecord({"n": 0}))
        count = int(seen["n"]) + 1  # type: ignore[call-overload]
        context.state["seen"] = ConfigRecord({"n": count})
        total = float(msg.content.array_records[keys.ARRAYS].to_numpy_ndarrays()[0].sum())
        metrics = {
            "pid": int(context.node_config[keys.PARTITION_ID]),
            "os-pid": os.getpid(),
            "count": count,
            "sum": total,
            keys.NUM_EXAMPLES: 1,
        }
        return answer(msg, metrics=metrics)

    return app


def message(node: int, size: int = 1000, sleep: float = 0.0, spin: float = 0.0) -> Message:
    return task([np.ones(size, dtype=np.float32)], node=node, config={"sleep": sleep, "spin": spin})


@pytest.fixture(scope="module")
def grid() -> Iterator[PoolGrid]:
    """Two workers that run every task (this process waits for them to start)."""
    pool = PoolGrid(stateful_app(), 5, workers=2, threads=0, inline=False)
    yield pool
    pool.close()


def metrics(replies: list[Message], key: str) -> list[float]:
    return [float(r.content["metrics"][key]) for r in replies]  # type: ignore[arg-type]


def test_replies_come_in_node_order_with_state_kept_across_rounds(
    task_identity: None, grid: PoolGrid
) -> None:
    nodes = [3, 1, 2, 4]
    for round_ in (1, 2, 3):
        replies = list(grid.send_and_receive([message(n) for n in nodes]))
        assert metrics(replies, "pid") == [2, 0, 1, 3]
        assert metrics(replies, "count") == [round_] * 4
        assert metrics(replies, "sum") == [1000.0] * 4
    assert sorted(grid._contexts) == sorted(nodes)
    workers = set(grid.pool.pids())
    assert set(metrics(replies, "os-pid")) <= workers and os.getpid() not in workers


def test_a_failing_client_replies_with_an_error_and_the_others_go_on(
    task_identity: None, grid: PoolGrid
) -> None:
    replies = list(grid.send_and_receive([message(5), message(1)]))
    assert replies[0].has_error() and "broken client" in replies[0].error.reason
    assert not replies[1].has_error()


def test_metering_counts_the_bytes_the_engine_serialized(
    task_identity: None, grid: PoolGrid
) -> None:
    grid._sizes.clear()  # the sizes of earlier tests' messages, never asked for
    metered_round(grid, [message(n) for n in (1, 2, 3)])


def test_push_then_pull_waits_for_the_replies_asked_for(
    task_identity: None, grid: PoolGrid
) -> None:
    ids = list(grid.push_messages([message(1), message(2)]))
    assert metrics(list(grid.pull_messages(ids[::-1])), "pid") == [1, 0]
    assert list(grid.pull_messages(ids)) == []  # pulled once


def test_close_stops_every_worker_and_frees_the_shared_memory(task_identity: None) -> None:
    pool = PoolGrid(stateful_app(), 2, workers=2, threads=0, inline=False)
    ids = list(pool.push_messages([message(1, 10**6), message(2, 10**6)]))
    names = {s.shm.name for p in pool._pending.values() for s in p.segments}
    processes = [psutil.Process(pid) for pid in pool.pool.pids()]
    pool.close()  # replies never pulled
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    assert not any(sender.is_alive() for sender in pool.pool._senders)
    assert names and not any(os.path.exists(f"/dev/shm/{n.lstrip('/')}") for n in names)
    assert ids and pool._pending == {}


def test_this_process_trains_while_the_workers_start_and_they_take_over(
    task_identity: None,
) -> None:
    """The first rounds run here (the workers are still importing their backend); once
    both workers have answered a task, they run every client; state and order never change."""
    pool = PoolGrid(stateful_app(), 4, workers=2, threads=0, start_after=0)
    try:
        nodes, here, deadline = [4, 2, 3, 1], [], time.monotonic() + 300
        workers = set(pool.pool.pids())
        for round_ in range(1, 1000):
            replies = list(pool.send_and_receive([message(n, sleep=0.05) for n in nodes]))
            assert metrics(replies, "pid") == [3, 1, 2, 0]
            assert metrics(replies, "count") == [round_] * 4
            pids = set(metrics(replies, "os-pid"))
            here.append(os.getpid() in pids)
            if (pids <= workers and len(pool.pool.warm) == 2) or time.monotonic() > deadline:
                break
        assert here[0]  # the first round ran before any worker was ready
        assert not here[-1] and pids <= workers  # the last one in the workers only
    finally:
        pool.close()


def test_workers_start_once_the_clients_took_start_after_cpu_seconds_here(
    task_identity: None,
) -> None:
    """A short run never starts them; a longer one starts them after that much client work."""
    pool = PoolGrid(stateful_app(), 3, workers=2, threads=0, start_after=0.25)
    try:
        replies = list(pool.send_and_receive([message(n, spin=0.1) for n in (1, 2)]))
        assert set(metrics(replies, "os-pid")) == {os.getpid()}
        assert not pool.pool.started and pool.pool.pids() == []
        pool.send_and_receive([message(n, spin=0.1) for n in (1, 2, 3)])
        assert pool.pool.started and pool.client_seconds >= 0.25
    finally:
        pool.close()
    assert PoolGrid(stateful_app(), 3, workers=2, threads=0).start_after == 2 * 5.0


def test_a_worker_holds_a_second_task_only_while_more_wait_than_workers(
    task_identity: None,
) -> None:
    """Six tasks for two workers: each worker gets two at once (the one it runs and the
    next), the last two wait for a worker with none; replies in node order, each once."""
    pool = PoolGrid(stateful_app(), 7, workers=2, threads=0, inline=False)
    nodes = [1, 2, 3, 4, 6, 7]  # node 5 (partition 4) is the broken client
    try:
        deadline = time.monotonic() + 60
        while len(pool.pool.ready) < 2 and time.monotonic() < deadline:
            pool._collect(timeout=0.1)
        ids = list(pool.push_messages([message(n, sleep=0.5) for n in nodes]))
        assert {w: len(held) for w, held in pool.pool.busy.items()} == {0: 2, 1: 2}
        assert len(pool._queue) == 2
        replies = list(pool.pull_messages(ids))
        assert metrics(replies, "pid") == [n - 1 for n in nodes]
        assert metrics(replies, "count") == [1] * 6
        assert len(set(metrics(replies, "os-pid"))) == 2
        assert not pool.pool.busy
    finally:
        pool.close()


def test_the_first_tasks_leave_before_the_rest_are_serialized(
    task_identity: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the workers running, a push sends each worker a task, then the next one it may
    hold, then the rest, each step serialized into a block of shared memory of its own after
    the previous step left; every task reads the model from the first block, the blocks are
    given back once the replies are in, and the next push fills the same blocks."""
    pool = PoolGrid(stateful_app(), 7, workers=2, threads=0, inline=False)
    sent_before: list[int] = []  # tasks sent when each message was serialized
    serialize = pool_module.deflate

    def deflate(message: Message, wire: dict[str, bytes]) -> list[str]:
        sent_before.append(sum(len(held) for held in pool.pool.busy.values()))
        return serialize(message, wire)

    monkeypatch.setattr(pool_module, "deflate", deflate)
    nodes = [1, 2, 3, 4, 6, 7]  # node 5 (partition 4) is the broken client
    try:
        deadline = time.monotonic() + 60
        while len(pool.pool.ready) < 2 and time.monotonic() < deadline:
            pool._collect(timeout=0.1)
        ids = list(pool.push_messages([message(n, size=10**5, sleep=0.2) for n in nodes]))
        assert sent_before == [0, 0, 2, 2, 4, 4]
        tasks = [pool._pending[i].task for i in ids]
        assert [len(t.segments) for t in tasks] == [1, 1, 2, 2, 2, 2]
        names = {name for t in tasks for name in t.segments}
        assert len(names) == 3  # one block per step
        assert len(set.intersection(*(set(t.segments) for t in tasks))) == 1  # the model's
        replies = list(pool.pull_messages(ids))
        assert metrics(replies, "pid") == [n - 1 for n in nodes]
        assert metrics(replies, "sum") == [10**5] * 6
        assert {s.shm.name for s in pool.segments.free} == names == pool.segments.names()
        again = list(pool.push_messages([message(n, size=10**4) for n in nodes]))
        assert {name for i in again for name in pool._pending[i].task.segments} <= names
        assert metrics(list(pool.pull_messages(again)), "sum") == [10**4] * 6
        assert pool.segments.names() == names
    finally:
        pool.close()
    assert not any(os.path.exists(f"/dev/shm/{n.lstrip('/')}") for n in names)


def test_a_push_that_fails_midway_leaves_no_shared_memory_behind(
    task_identity: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fifth message fails to serialize: the push raises, the four tasks already sent
    still answer, and their blocks are given back once they have (and freed at the end)."""
    pool = PoolGrid(stateful_app(), 7, workers=2, threads=0, inline=False)
    serialize, calls = pool_module.deflate, []

    def deflate(message: Message, wire: dict[str, bytes]) -> list[str]:
        calls.append(message)
        if len(calls) == 5:
            raise ValueError("cannot serialize")
        return serialize(message, wire)

    monkeypatch.setattr(pool_module, "deflate", deflate)
    try:
        deadline = time.monotonic() + 60
        while len(pool.pool.ready) < 2 and time.monotonic() < deadline:
            pool._collect(timeout=0.1)
        with pytest.raises(ValueError, match="cannot serialize"):
            pool.push_messages([message(n) for n in (1, 2, 3, 4, 6, 7)])
        ids = list(pool._pending)
        names = {name for i in ids for name in pool._pending[i].task.segments}
        assert len(ids) == 4 and len(names) == 2
        assert metrics(list(pool.pull_messages(ids)), "pid") == [0, 1, 2, 3]
        assert {s.shm.name for s in pool.segments.free} == names  # no hold left on them
    finally:
        pool.close()
    assert not any(os.path.exists(f"/dev/shm/{n.lstrip('/')}") for n in names)


def test_a_worker_that_ends_before_reading_its_clientapp_blocks_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The ClientApp (here 4 MB, more than a pipe holds) follows the start over the worker's
    connection: a worker gone before reading it is reported gone, with its exit code, and
    neither the start nor the write waits for it."""
    data = np.ones(1_000_000, dtype=np.float32)
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return answer(msg, metrics={"first": float(data[0])})

    monkeypatch.setattr(pool_module, "_serve", worker_that_exits_at_once)
    workers = WorkerPool(app, 1, threads=0)
    try:
        with caplog.at_level(logging.WARNING, logger="fedflower.engine.pool"):
            workers.start()
            deadline = time.monotonic() + 60
            while not workers.gone and time.monotonic() < deadline:
                assert workers.receive(timeout=1.0) == ([], [])
        assert workers.gone == {0} and not workers.ready
        assert "ended with exit code 3" in caplog.text
    finally:
        workers.close()


@pytest.mark.parametrize("killed", [1, 2])
def test_a_worker_killed_mid_task_hands_its_client_on(
    task_identity: None, caplog: pytest.LogCaptureFixture, killed: int
) -> None:
    """Killing workers that hold tasks loses nothing: another worker or this process runs
    those clients from the state they had, and one warning line names each ended worker."""
    pool = PoolGrid(stateful_app(), 3, workers=2, threads=0, inline=False)
    try:
        assert metrics(list(pool.send_and_receive([message(1), message(2)])), "count") == [1, 1]
        ids = list(pool.push_messages([message(n, sleep=2.0) for n in (1, 2, 3)]))
        deadline = time.monotonic() + 60
        while len(pool.pool.busy) < 2 and time.monotonic() < deadline:
            pool._collect(timeout=0.1)
        held = list(pool.pool.busy)
        with caplog.at_level(logging.WARNING, logger="fedflower.engine.pool"):
            for worker in held[:killed]:
                os.kill(pool.pool.pids()[worker], signal.SIGKILL)
            replies = list(pool.pull_messages(ids))
        assert metrics(replies, "pid") == [0, 1, 2]
        assert metrics(replies, "count") == [2, 2, 1]
        assert len(pool.pool.gone) == killed
        ended = [r for r in caplog.records if "ended with exit code" in r.getMessage()]
        assert len(ended) == killed
        if killed == 2:
            assert os.getpid() in set(metrics(replies, "os-pid"))
    finally:
        pool.close()


def test_workers_setting() -> None:
    assert default_workers(num_clients=3, cores=8) == 3
    assert default_workers(num_clients=50, cores=8) == 8
    assert check_workers(2) == 2
    for bad in (0, -1, 1.5, "two", True):
        with pytest.raises(ConfigError, match=r"simulation\.workers must be a positive integer"):
            check_workers(bad)


def backend_app() -> ClientApp:
    """Replies with the Keras backend its worker process runs (what KERAS_BACKEND chose)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        import keras

        name = ConfigRecord({"backend": keras.backend.backend(), "os-pid": os.getpid()})
        return Message(RecordDict({"info": name}), reply_to=msg)

    return app


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_each_backend_runs_in_workers_of_its_own(task_identity: None) -> None:
    """Backends cycle over the nodes; each node's task runs in a worker of its backend."""
    grid = PoolGrid(backend_app(), 5, workers=1, threads=0, backends=["tensorflow", "jax"])
    try:
        replies = list(grid.send_and_receive([message(n) for n in range(1, 6)]))
        info = [r.content.config_records["info"] for r in replies]
        assert [i["backend"] for i in info] == ["tensorflow", "jax"] * 2 + ["tensorflow"]
        assert len({i["os-pid"] for i in info}) == 2  # one worker per backend
    finally:
        grid.close()


def test_backends_setting() -> None:
    assert worker_backends([], 2) == [None, None]  # this process's backend
    assert worker_backends(["tensorflow", "jax", "tensorflow"], 1) == ["tensorflow", "jax"]
    assert worker_backends(["jax", "tensorflow"], 3) == ["jax", "tensorflow", "jax"]
    assert check_backends(["tensorflow"]) == ["tensorflow"]
    with pytest.raises(ConfigError, match=r"simulation\.backends must list Keras backends"):
        check_backends(["mxnet"])
    with pytest.raises(ConfigError, match=r"simulation\.backends needs simulation=local"):
        check_backends(["tensorflow"], engine="ray")


def test_a_backend_that_is_not_installed_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_backends(["jax"]) == ["jax"]  # validate checks names only, within a second
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"backends must list installed backends, got 'jax'"):
        check_backends(["jax"], installed=True)


def test_blocks_are_sized_to_be_reused_and_at_most_keep_wait_unused() -> None:
    assert [block_size(n) for n in (0, 1, 4096, 4097, 11_000, 1 << 20)] == [
        4096, 4096, 4096, 8192, 16384, 1 << 20,
    ]  # fmt: skip
    assert block_size((1 << 20) + 1) == 2 << 20 and block_size(5_000_000) == 5 << 20
    store = SegmentStore()
    try:
        taken = [store.take({"a": b"x" * 5000}) for _ in range(SegmentStore.KEEP + 2)]
        names = [s.shm.name for s in taken]
        for segment in taken:
            segment.users = 1
            segment.release()
        assert [s.shm.name for s in store.free] == names[2:]  # the oldest two freed
        assert not any(os.path.exists(f"/dev/shm/{n.lstrip('/')}") for n in names[:2])
        small = store.take({"b": b"y" * 100})  # the smallest unused block that fits
        assert small.shm.name == names[2] and bytes(small.shm.buf[:100]) == b"y" * 100
        big = store.take({"c": b"z" * 9000})  # none fits: a new one
        assert big.size == 16384 and big.shm.name not in names
    finally:
        store.close()
    assert not any(os.path.exists(f"/dev/shm/{n.lstrip('/')}") for n in names)


def test_workers_get_a_cpu_each_only_when_they_are_as_many_as_the_cpus() -> None:
    assert worker_cpus(2, {0, 1}) == [0, 1] and worker_cpus(3, {4, 7, 5}) == [4, 5, 7]
    assert worker_cpus(2, {0, 1, 2, 3}) == [None, None]  # a smaller pool: not pinned
    assert worker_cpus(1, {3}) == [None] and worker_cpus(3, {0, 1}) == [None] * 3


def test_pinned_workers_run_on_their_cpus_and_the_loop_on_the_last_until_the_end(
    task_identity: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = os.sched_getaffinity(0)
    cpu = min(before)
    monkeypatch.setattr(pool_module, "worker_cpus", lambda size: [cpu] * size)
    pool = PoolGrid(stateful_app(), 2, workers=2, threads=0, inline=False)
    try:
        replies = list(pool.send_and_receive([message(1), message(2)]))
        assert metrics(replies, "pid") == [0, 1]
        assert [psutil.Process(p).cpu_affinity() for p in pool.pool.pids()] == [[cpu], [cpu]]
        assert os.sched_getaffinity(0) == {cpu}  # this thread, the server's loop
        started, own = (threading.Thread(target=time.sleep, args=(30,), daemon=True) for _ in "ab")
        started.start()  # inherits the pinned CPU
        own.start()
        assert os.sched_getaffinity(started.native_id) == {cpu}  # type: ignore[arg-type]
        mine = {max(before)}  # a thread that chose its CPUs keeps them
        os.sched_setaffinity(own.native_id, mine)  # type: ignore[arg-type]
    finally:
        pool.close()
    assert os.sched_getaffinity(0) == before
    assert os.sched_getaffinity(started.native_id) == before  # type: ignore[arg-type]
    assert os.sched_getaffinity(own.native_id) == (mine if len(before) > 1 else before)  # type: ignore[arg-type]
