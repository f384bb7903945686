"""Clocks for the server loop: virtual time in simulation, wall-clock time in deployments.

A :class:`Clock` tells the server what time it is and lets it wait for replies. Two exist:

* :class:`VirtualClockGrid` wraps the simulation's Grid. Every pushed message gets a virtual
  duration from a :class:`~fedflower.engine.latency.LatencyModel` (the client's examples, epochs and
  the bytes both ways), and a reply becomes visible to ``pull_messages`` only once the virtual
  clock has reached its finish time; ``wait`` advances the clock to the next finish. Results
  therefore depend only on the config and the seed, never on how fast this machine runs the
  clients. A synchronous round (``send_and_receive``) lasts as long as its slowest client, so
  synchronous and asynchronous strategies are timed by the same model. It does not count
  bytes: a :class:`~fedflower.engine.metered.MeteredGrid` around it does, asking it
  (``wire_nbytes``) the size each message had on the inner grid; a reply is metered when the
  clock releases it.
* :class:`WallClock` is used with any other Grid (a real deployment): replies are folded in the
  order they arrive and ``wait`` sleeps a short poll interval.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from flwr.app import Error, Message, MessageType, MetricRecord
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedflower import keys
from fedflower.engine.latency import LatencyModel
from fedflower.engine.metered import crossing_nbytes
from fedflower.engine.wrapper import GridWrapper
from fedflower.errors import ConfigError
from fedflower.records import records_of

log = logging.getLogger(__name__)


@runtime_checkable
class Clock(Protocol):
    """What the asynchronous server loop needs from time."""

    @property
    def now(self) -> float:
        """Seconds since the run started (virtual or real)."""
        ...

    def wait(self, message_ids: Sequence[str], timeout: float | None = None) -> None:
        """Block until (some of) ``message_ids`` may have a reply to pull."""
        ...


@runtime_checkable
class ReplayableClock(Clock, Protocol):
    """A clock whose state a checkpoint keeps and that re-issues the tasks in flight on resume
    (the virtual clock; the wall clock cannot be replayed).
    """

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        ...

    def replay(self, message_ids: Sequence[str]) -> None:  # noqa: D102
        ...


class WallClock:
    """Real time: ``now`` counts seconds since creation, ``wait`` sleeps one poll interval.

    Parameters
    ----------
    poll_interval : float
        Seconds to sleep between polls of the grid.
    time_fn, sleep_fn : callable
        The time source and the sleep function (injectable for tests).
    """

    def __init__(
        self,
        poll_interval: float = 0.05,
        time_fn: Callable[[], float] = time.monotonic,
        sleep_fn: Callable[[float], None] = time.sleep,
    ) -> None:
        self.poll_interval = poll_interval
        self._time = time_fn
        self._sleep = sleep_fn
        self._t0 = time_fn()

    @property
    def now(self) -> float:  # noqa: D102
        return self._time() - self._t0

    def wait(self, message_ids: Sequence[str], timeout: float | None = None) -> None:  # noqa: D102
        self._sleep(self.poll_interval)


@dataclass
class _Task:
    seq: int
    message_id: str
    message: Message
    node: int
    start: float
    train: bool
    epochs: float
    bytes_down: int
    reply: Message | None = None
    bytes_up: int = 0
    finish: float = math.inf


def _num_examples(reply: Message) -> int:
    if reply.has_error():
        return 0
    for record in records_of(reply.content, MetricRecord):
        if keys.NUM_EXAMPLES in record:
            return int(record[keys.NUM_EXAMPLES])  # type: ignore[arg-type]
    return 0


def _epochs(message: Message) -> float:
    config = message.content.config_records.get(keys.CONFIG)
    if config is None or keys.LOCAL_EPOCHS not in config:
        return 1.0
    return float(config[keys.LOCAL_EPOCHS])  # type: ignore[arg-type]


class VirtualClockGrid(GridWrapper):
    """A Grid with a virtual clock driven by a latency model.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The simulation's grid (e.g. :class:`~fedflower.engine.local.LocalGrid`).
    latency : LatencyModel
        Durations of the clients' tasks.
    poll_interval : float
        Real seconds between polls while replies are still being computed (only for grids
        that run clients in the background, such as Flower's Ray engine).
    timeout : float
        Real seconds to wait for a reply before treating the task as failed.
    """

    def __init__(
        self,
        grid: Grid,
        latency: LatencyModel,
        poll_interval: float = 0.01,
        timeout: float = 3600.0,
    ) -> None:
        super().__init__(grid)
        self.latency = latency
        self.poll_interval = poll_interval
        self.timeout = timeout
        self._now = 0.0
        self._seq = 0
        self._tasks: dict[str, _Task] = {}
        self._resumed: dict[str, tuple[float, int]] = {}
        self._replay: list[tuple[float, int]] = []
        self._sizes: dict[str, int] = {}

    @property
    def now(self) -> float:
        """The virtual time in seconds."""
        return self._now

    def round_report(self) -> dict[str, Any]:
        """``virtual_time``: the virtual clock's reading at the row."""
        return {"virtual_time": float(self._now)}

    def run_report(self) -> dict[str, Any]:
        """``virtual_time``: the run's final virtual time."""
        return self.round_report()

    def wire_nbytes(self, message_id: str) -> int | None:
        """The bytes a message pushed or a reply released took on the inner grid (asked once).

        0 for a task re-issued on resume (its bytes were counted when the task was first sent) and
        for the error that stands for a missing reply.
        """
        return self._sizes.pop(message_id, None)

    def state_dict(self) -> dict[str, Any]:
        """The virtual time, task counter, and the tasks still in flight.

        A task in flight is kept as its start time and sequence number (which seeds its
        jitter), by message id: a resumed run pushes it again through :meth:`replay`.
        """
        return {
            "now": self._now,
            "seq": self._seq,
            "tasks": {i: [t.start, t.seq] for i, t in self._tasks.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._now, self._seq = float(state["now"]), int(state["seq"])
        tasks = state.get("tasks", {})
        self._resumed = {i: (float(start), int(seq)) for i, (start, seq) in tasks.items()}

    def replay(self, message_ids: Sequence[str]) -> None:
        """Make the next pushed messages the tasks ``message_ids`` of the restored state.

        After :meth:`load_state_dict`, a resumed run pushes the messages of the tasks that
        were in flight again, in this order; each gets its task's start time and sequence
        number back (so the same duration and finish time) and reports no wire bytes (they
        were counted when the task was first sent).
        """
        self._replay.extend(self._resumed.pop(i) for i in message_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Send the messages and start their virtual tasks at the current virtual time."""
        messages = list(messages)
        ids = list(self.inner.push_messages(messages))
        sizes = [crossing_nbytes(self.inner, m) for m in messages]
        for message_id, message, size in zip(ids, messages, sizes, strict=True):
            if self._replay:  # a task in flight at the checkpoint, pushed again
                start, seq = self._replay.pop(0)
                self._sizes[message_id] = 0
            else:
                self._seq += 1
                start, seq = self._now, self._seq
                self._sizes[message_id] = size
            self._tasks[message_id] = _Task(
                seq=seq,
                message_id=message_id,
                message=message,
                node=message.metadata.dst_node_id,
                start=start,
                train=message.metadata.message_type.startswith(MessageType.TRAIN),
                epochs=_epochs(message),
                bytes_down=size,
            )
        return ids

    def _duration(self, task: _Task, reply: Message) -> float:
        return self.latency.duration(
            task.node,
            examples=_num_examples(reply),
            epochs=task.epochs,
            bytes_down=task.bytes_down,
            bytes_up=task.bytes_up,
            train=task.train,
            task=task.seq,
        )

    def _collect(self, message_ids: Sequence[str], block: bool, timeout: float | None) -> None:
        """Fetch the replies of ``message_ids`` from the inner grid and time them."""
        missing = [i for i in message_ids if i in self._tasks and self._tasks[i].reply is None]
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while missing:
            for reply in self.inner.pull_messages(missing):
                task = self._tasks.get(reply.metadata.reply_to_message_id)
                if task is None or task.reply is not None:
                    continue
                task.reply = reply
                task.bytes_up = crossing_nbytes(self.inner, reply)
                task.finish = task.start + self._duration(task, reply)
            missing = [i for i in missing if self._tasks[i].reply is None]
            if not missing or not block:
                return
            if time.monotonic() >= deadline:
                for i in missing:
                    task = self._tasks[i]
                    log.warning("no reply from node %s within %.0f s", task.node, timeout)
                    error = Error(
                        code=ErrorCode.REPLY_MESSAGE_UNAVAILABLE,
                        reason="no reply within the timeout",
                    )
                    task.reply = Message(error, reply_to=task.message)
                    task.finish = task.start + self.latency.transfer_time(task.bytes_down)
                return
            time.sleep(self.poll_interval)

    def finish_time(self, message_id: str) -> float | None:
        """The virtual finish time of a pushed message, once its reply is known."""
        self._collect([message_id], block=False, timeout=None)
        task = self._tasks.get(message_id)
        return None if task is None or task.reply is None else task.finish

    def wait(self, message_ids: Sequence[str], timeout: float | None = None) -> None:
        """Advance the virtual clock to the earliest finish among ``message_ids``."""
        ids = [i for i in message_ids if i in self._tasks]
        if not ids:
            return
        self._collect(ids, block=True, timeout=timeout)
        self._now = max(self._now, min(self._tasks[i].finish for i in ids))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Return the replies whose virtual finish time has come, earliest first."""
        ids = [i for i in message_ids if i in self._tasks]
        self._collect(ids, block=False, timeout=None)
        ready = sorted(
            (self._tasks[i] for i in ids if self._tasks[i].finish <= self._now),
            key=lambda t: (t.finish, t.seq),
        )
        replies = []
        for task in ready:
            del self._tasks[task.message_id]
            self._sizes[task.reply.metadata.message_id] = task.bytes_up  # type: ignore[union-attr]
            replies.append(task.reply)
        return replies  # type: ignore[return-value]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """A synchronous round: it ends when the slowest of its clients has replied."""
        ids = list(self.push_messages(messages))
        if not ids:
            return []
        self._collect(ids, block=True, timeout=timeout)
        self._now = max(self._now, max(self._tasks[i].finish for i in ids))
        return self.pull_messages(ids)


def build_latency(options: Any) -> LatencyModel | None:
    """The :class:`~fedflower.engine.latency.LatencyModel` a ``latency`` config group describes.

    Returns ``None`` (no virtual clock) for ``latency=none``, i.e. a config without
    ``_target_``.
    """
    if options is None or "_target_" not in options:
        return None
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        model = instantiate(options)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"cannot build the latency model: {cause}") from exc
    if not isinstance(model, LatencyModel):
        raise ConfigError(f"latency._target_ must build a LatencyModel, got {type(model)}")
    return model
