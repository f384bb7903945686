"""``GridWrapper``: a Grid that forwards everything to another Grid; the wrappers' protocols.

Cross-cutting behaviour (metering bytes, a virtual clock, stragglers) is a subclass that
overrides only the calls it changes, so the wrappers stack around any simulation or
deployment grid. What a wrapper (or a strategy) adds to a run's outputs and checkpoints it
says through two small protocols, :class:`Reports` and :class:`Stateful` (and a grid that
knows the sizes of its messages, :class:`WireSizes`, or its nodes' names,
:class:`NamesNodes`); the run's :class:`~fedflower.server.pipeline.Pipeline` lists the
objects, nothing walks a chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run


@runtime_checkable
class Reports(Protocol):
    """Something that contributes fields to a run's outputs.

    ``round_report`` gives the fields of one ``metrics.jsonl`` row (what happened since the
    last call); ``run_report`` the totals for ``results.json``.
    """

    def round_report(self) -> dict[str, Any]:  # noqa: D102
        ...

    def run_report(self) -> dict[str, Any]:  # noqa: D102
        ...


@runtime_checkable
class Stateful(Protocol):
    """Something whose state a checkpoint keeps (plain data and NumPy arrays, no pickles)."""

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: D102
        ...


@runtime_checkable
class WireSizes(Protocol):
    """A grid that serialized the messages itself and tells their sizes (the local engine, the
    virtual clock), so the meter does not serialize them a second time.

    ``wire_nbytes(message_id)``: the bytes the message had on the wire (0: it put none there,
    as a task the virtual clock re-issues on resume); ``None``: not one of its messages.
    """

    def wire_nbytes(self, message_id: str) -> int | None:  # noqa: D102
        ...


@runtime_checkable
class NamesNodes(Protocol):
    """A grid that knows each node's name in per-client results (the in-process engine knows
    each node's config; a deployment's grid does not, and the clients name themselves).
    """

    def node_name(self, node_id: int) -> str:  # noqa: D102
        ...


class DropsStragglers(Protocol):
    """What the straggler wrapper asks a strategy (every fedflower strategy declares it)."""

    @property
    def drops_stragglers(self) -> bool:  # noqa: D102
        ...


class MessageFactory:
    """``Grid.create_message`` as every grid here builds a message: Flower's ``Message``."""

    def create_message(  # noqa: D102
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)


class GridWrapper(MessageFactory, Grid):
    """Forward every Grid call to ``inner``.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The wrapped grid.
    """

    def __init__(self, grid: Grid) -> None:
        self.inner = grid

    def set_run(self, run: Run) -> None:  # noqa: D102
        self.inner.set_run(run)

    @property
    def run(self) -> Run:  # noqa: D102
        return self.inner.run

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self.inner.pull_messages(message_ids)

    def send_and_receive(  # noqa: D102
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.inner.send_and_receive(messages, timeout=timeout)
