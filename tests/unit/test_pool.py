"""fedflower.engine.pool: worker processes, shared memory, replies in order, clean shutdown."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import numpy as np
import psutil
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from helpers import answer, metered_round, task

from fedflower import keys
from fedflower.engine.pool import (
    PoolGrid,
    check_backends,
    check_workers,
    default_workers,
    worker_backends,
)
from fedflower.errors import ConfigError


def stateful_app() -> ClientApp:
    """Replies with its partition id, its process id, how often it ran and the model's sum."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
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


def message(node: int, size: int = 1000) -> Message:
    return task([np.ones(size, dtype=np.float32)], node=node)


@pytest.fixture(scope="module")
def grid() -> Iterator[PoolGrid]:
    pool = PoolGrid(stateful_app(), 5, workers=2, threads=0)
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
    pool = PoolGrid(stateful_app(), 2, workers=2, threads=0)
    ids = list(pool.push_messages([message(1, 10**6), message(2, 10**6)]))
    names = {segment.shm.name for segment, _ in pool._running.values()}
    processes = [psutil.Process(pid) for pid in pool.pool.pids()]
    pool.close()  # replies never pulled
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    assert names and not any(os.path.exists(f"/dev/shm/{n.lstrip('/')}") for n in names)
    assert ids and pool._running == {}


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
