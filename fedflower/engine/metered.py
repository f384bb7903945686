"""A Grid wrapper that counts the bytes of every message that crosses it.

Sizes are those of the serialized objects Flower sends on the wire (each message is deflated
into its content-addressed objects: message, records, arrays and their chunks). Every
strategy, synchronous or asynchronous, is metered the same way without knowing about it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, Message, MessageType
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedflower.engine.wrapper import GridWrapper, WireSizes
from fedflower.records import records_of

_SIZES: dict[str, int] = {}
"""Serialized size by object id. Object ids are hashes of the serialized content, so a size
never changes for an id; the model broadcast to every node is serialized once."""
_MAX_CACHED = 4096


def message_nbytes(message: Message) -> int:
    """Serialized size in bytes of a message and everything it carries."""
    total = 0
    for oid, obj in get_all_nested_objects(message).items():
        size = _SIZES.get(oid)
        if size is None:
            if len(_SIZES) >= _MAX_CACHED:
                _SIZES.clear()
            size = _SIZES[oid] = len(obj.deflate())
        total += size
    return total


def crossing_nbytes(grid: Grid, message: Message) -> int:
    """Serialized size of a message that just crossed ``grid`` (pushed to it or pulled from it).

    A grid that serialized the message itself (the in-process engine's ``wire_nbytes``) tells
    the size of the bytes it sent, so the message is not serialized a second time to be metered.
    """
    size = grid.wire_nbytes(message.metadata.message_id) if isinstance(grid, WireSizes) else None
    return message_nbytes(message) if size is None else int(size)


def _is_task(message: Message) -> bool:
    meta, content = message.metadata, message.content
    return meta.message_type.startswith(MessageType.TRAIN) and bool(
        records_of(content, ArrayRecord)
    )


class MeteredGrid(GridWrapper):
    """Delegate to ``grid`` and count the bytes pushed (down) and pulled (up).

    A message that put no bytes on the wire (``wire_nbytes`` of 0: a task the virtual clock
    re-issues on resume, counted when first sent) is counted neither as bytes nor as a
    training task, so a resumed run meters what an uninterrupted one does.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The grid of the simulation engine or of a deployment (or the virtual clock around it).
    """

    def __init__(self, grid: Grid) -> None:
        super().__init__(grid)
        self.bytes_down = 0
        self.bytes_up = 0
        self.train_tasks = 0

    def round_report(self) -> dict[str, Any]:
        """``train_clients``: how many clients were sent a model to train since the last call.

        A training task is a train message that carries a model: the several exchanges of
        SecAgg+ in one round carry it once per client.
        """
        report = {"train_clients": self.train_tasks}
        self.train_tasks = 0
        return report

    def run_report(self) -> dict[str, Any]:
        """Nothing: the recorder sums the rows' bytes."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The counts not yet taken (an asynchronous checkpoint falls between two rows)."""
        return {"bytes": [self.bytes_down, self.bytes_up], "train_tasks": self.train_tasks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.bytes_down, self.bytes_up = (int(b) for b in state["bytes"])
        self.train_tasks = int(state["train_tasks"])

    def take(self) -> tuple[int, int]:
        """Return ``(bytes_down, bytes_up)`` since the last call and reset the counters."""
        counts = (self.bytes_down, self.bytes_up)
        self.bytes_down = self.bytes_up = 0
        return counts

    def _sent(self, messages: list[Message]) -> None:
        sizes = [crossing_nbytes(self.inner, m) for m in messages]
        self.bytes_down += sum(sizes)
        sent = zip(messages, sizes, strict=True)
        self.train_tasks += sum(1 for m, size in sent if size and _is_task(m))

    def _received(self, replies: list[Message]) -> None:
        self.bytes_up += sum(crossing_nbytes(self.inner, m) for m in replies)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        messages = list(messages)
        ids = list(self.inner.push_messages(messages))
        self._sent(messages)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        replies = list(self.inner.pull_messages(message_ids))
        self._received(replies)
        return replies

    def send_and_receive(  # noqa: D102
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self._sent(messages)
        self._received(replies)
        return replies
