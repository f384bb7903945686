"""The asynchronous loop's in-flight task table: its transitions and its plain-data state."""

from __future__ import annotations

import copy

import numpy as np

from fedflower.server.tasks import Task, TaskTable


def model(value: float) -> list[np.ndarray]:
    return [np.full(2, value)]


def test_pick_fills_only_free_slots_with_idle_nodes() -> None:
    table = TaskTable(concurrency=3, seed=0)
    first = table.pick([10, 11, 12, 13])
    assert len(first) == 3 and set(first) <= {10, 11, 12, 13}
    table.dispatch(["a", "b"], first[:2], version=0, model=model(0), now=1.0, timeout=5.0)
    assert table.free == 1
    again = table.pick([10, 11, 12, 13])
    assert len(again) == 1 and again[0] not in first[:2]  # busy nodes are not picked
    table.rest(again[0])
    rest = table.pick([10, 11, 12, 13])
    assert len(rest) == 1 and rest[0] not in {*first[:2], again[0]}


def test_release_returns_the_start_model_and_forgets_unreferenced_versions() -> None:
    table = TaskTable(concurrency=4)
    table.dispatch(["a", "b"], [1, 2], version=0, model=model(0), now=0.0, timeout=9.0)
    table.dispatch(["c"], [3], version=1, model=model(1), now=2.0, timeout=9.0)
    task, start = table.release("a") or (None, None)
    assert task == Task(1, 0, 0.0, 9.0) and start is not None and start[0][0] == 0
    assert sorted(table.models) == [0, 1]  # "b" still trains from version 0
    table.release("b")
    assert sorted(table.models) == [1]
    assert table.release("b") is None  # a reply for a task no longer in flight is ignored
    assert len(table) == 1


def test_expire_frees_late_tasks_and_rests_their_nodes() -> None:
    table = TaskTable(concurrency=3)
    table.dispatch(["a", "b"], [1, 2], version=0, model=model(0), now=0.0, timeout=5.0)
    table.dispatch(["c"], [3], version=0, model=model(0), now=4.0, timeout=5.0)
    assert table.expire(now=5.0) == []  # the deadline itself is still in time
    expired = table.expire(now=6.0)
    assert [t.node_id for t in expired] == [1, 2]
    assert list(table.tasks) == ["c"] and table.resting == {1, 2}
    assert table.all_resting([1, 2]) and not table.all_resting([1, 2, 3])
    table.wake()
    assert not table.resting and not table.all_resting([1, 2])


def test_state_dict_round_trip_continues_the_same_node_choices() -> None:
    table = TaskTable(concurrency=2, seed=3)
    nodes = table.pick(range(1, 9))
    table.dispatch(["a", "b"], nodes, version=4, model=model(4), now=1.5, timeout=2.0)
    table.rest(7)
    state = copy.deepcopy(table.state_dict())
    restored = TaskTable(concurrency=1, seed=99)
    restored.load_state_dict(state)
    assert restored.tasks == table.tasks and restored.resting == table.resting
    np.testing.assert_array_equal(restored.models[4][0], table.models[4][0])
    table.release("a")
    restored.release("a")
    assert table.pick(range(1, 9)) == restored.pick(range(1, 9))


def test_rename_keys_the_tasks_by_their_new_message_ids() -> None:
    table = TaskTable(concurrency=2, seed=0)
    table.dispatch(["a", "b"], [1, 2], version=0, model=model(0), now=1.0, timeout=5.0)
    table.rename({"a": "x", "b": "y"})
    assert list(table.tasks) == ["x", "y"]
    task, start = table.release("y")  # type: ignore[misc]
    assert task.node_id == 2 and start[0].tolist() == [0.0, 0.0]
