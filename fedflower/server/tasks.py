"""The in-flight task table of the asynchronous server loop.

An asynchronous strategy (FedBuff, Nguyen et al. 2022, arXiv:2106.06639; FedAsync, Xie et al.
2019, arXiv:1903.03934) keeps up to ``concurrency`` client tasks running. :class:`TaskTable`
holds what the server must remember about them, as plain data a checkpoint can store: for each
task its node, the model version it started from and its deadline; the start models still
referenced by a task (FedBuff needs them for the clients' deltas); the nodes resting after a
failure; the state of the generator that picks idle nodes. Its transitions are the loop's
events: :meth:`~TaskTable.pick` idle nodes and :meth:`~TaskTable.dispatch` tasks to them,
:meth:`~TaskTable.release` a task when its reply arrives, :meth:`~TaskTable.expire` tasks
past their deadline, :meth:`~TaskTable.rest` a node whose task failed and
:meth:`~TaskTable.wake` the resting nodes once another node's reply has been accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Arrays = list[np.ndarray]


@dataclass
class Task:
    """One client task in flight.

    Attributes
    ----------
    node_id : int
        The node training.
    version : int
        The server model version it trains from.
    started : float
        Dispatch time (seconds of the run's clock, virtual or wall).
    deadline : float
        Time after which the task is abandoned and its node counted as failed.
    """

    node_id: int
    version: int
    started: float
    deadline: float


class TaskTable:
    """Client tasks in flight, the models they started from, and the resting nodes.

    Parameters
    ----------
    concurrency : int
        Tasks in flight at most.
    seed : int
        Seeds the choice of idle nodes.

    Examples
    --------
    >>> table = TaskTable(concurrency=2, seed=0)
    >>> nodes = table.pick([7, 8, 9])
    >>> table.dispatch(["a", "b"], nodes, version=0, model=[np.zeros(1)], now=0.0, timeout=5.0)
    >>> len(table), table.free
    (2, 0)
    >>> task, start = table.release("a")
    >>> task.version, len(table)
    (0, 1)
    >>> [t.node_id for t in table.expire(now=6.0)] == [nodes[1]], len(table)
    (True, 0)
    """

    def __init__(self, concurrency: int, seed: int = 0) -> None:
        self.concurrency = concurrency
        self.tasks: dict[str, Task] = {}
        self.models: dict[int, Arrays] = {}
        self.resting: set[int] = set()
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def free(self) -> int:
        """Slots without a task."""
        return max(0, self.concurrency - len(self.tasks))

    def pick(self, node_ids: Iterable[int]) -> list[int]:
        """Up to :attr:`free` random idle nodes (neither busy nor resting) among ``node_ids``."""
        busy = {t.node_id for t in self.tasks.values()}
        idle = sorted(set(node_ids) - busy - self.resting)
        if not idle or not self.free:
            return []
        # pick positions, not ids: uint64 node ids do not survive numpy's float conversion
        picks = self._rng.choice(len(idle), size=min(self.free, len(idle)), replace=False)
        return [int(idle[i]) for i in picks]

    def dispatch(
        self,
        message_ids: Sequence[str],
        node_ids: Sequence[int],
        version: int,
        model: Arrays,
        now: float,
        timeout: float,
    ) -> None:
        """Record tasks sent to ``node_ids`` at ``now``, training from ``model`` (``version``)."""
        self.models.setdefault(version, model)
        for message_id, node in zip(message_ids, node_ids, strict=True):
            self.tasks[message_id] = Task(int(node), version, now, now + timeout)

    def release(self, message_id: str) -> tuple[Task, Arrays] | None:
        """Remove a task whose reply arrived; return it with its start model (``None`` if unknown).

        The start model is forgotten once no task in flight started from its version.
        """
        task = self.tasks.pop(message_id, None)
        if task is None:
            return None
        start = self.models[task.version]
        if all(t.version != task.version for t in self.tasks.values()):
            del self.models[task.version]
        return task, start

    def expire(self, now: float) -> list[Task]:
        """Remove and return the tasks whose deadline has passed; their nodes rest."""
        expired = [(i, t) for i, t in self.tasks.items() if now > t.deadline]
        for message_id, task in expired:
            self.release(message_id)
            self.rest(task.node_id)
        return [task for _, task in expired]

    def rest(self, node_id: int) -> None:
        """Give ``node_id`` no new task until another node's reply is accepted."""
        self.resting.add(int(node_id))

    def wake(self) -> None:
        """A reply was accepted: resting nodes may get work again."""
        self.resting.clear()

    def all_resting(self, node_ids: Iterable[int]) -> bool:
        """Whether every connected node failed since the last accepted reply."""
        return bool(self.resting) and set(node_ids) <= self.resting

    def rename(self, message_ids: dict[str, str]) -> None:
        """Key the tasks by new message ids (``old -> new``), e.g. after re-issuing them."""
        self.tasks = {message_ids.get(i, i): t for i, t in self.tasks.items()}

    def state_dict(self) -> dict[str, Any]:
        """The table as plain data (lists, dicts, numbers, arrays) for a checkpoint."""
        return {
            "concurrency": self.concurrency,
            "tasks": {i: asdict(t) for i, t in self.tasks.items()},
            "models": {v: [np.array(a) for a in m] for v, m in self.models.items()},
            "resting": sorted(self.resting),
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.concurrency = int(state["concurrency"])
        self.tasks = {i: Task(**t) for i, t in state["tasks"].items()}
        self.models = {int(v): list(m) for v, m in state["models"].items()}
        self.resting = set(state["resting"])
        self._rng.bit_generator.state = state["rng"]
