"""Reads every federated evaluation reply into the run's per-client log.

The replies already carry one client's metrics each; the grid knows which node sent each one,
so :class:`PerClientGrid` names the client and hands the metrics to
:class:`fedflower.outputs.per_client.PerClientLog`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from fedflower import keys
from fedflower.engine.wrapper import GridWrapper, NamesNodes
from fedflower.outputs.per_client import PerClientLog
from fedflower.records import record_of


class PerClientGrid(GridWrapper):
    """Reads every federated evaluation reply into a :class:`PerClientLog`.

    A node is named by ``namer`` when the engine grid has one (:func:`engine_namer`: the
    in-process engine knows each node's config); otherwise the evaluate messages ask the clients to
    name themselves (``report-client``) and the replies carry the name.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The grid evaluate messages go through.
    per_client : PerClientLog
        Where the rows go.
    namer : callable, optional
        A node's name from its id (``None``: the clients name themselves).
    """

    def __init__(
        self, grid: Grid, per_client: PerClientLog, namer: Callable[[int], str] | None = None
    ) -> None:
        super().__init__(grid)
        self.log = per_client
        self._namer = namer
        self._rounds: dict[int, int] = {}  # node -> round of the evaluation sent to it

    def round_report(self) -> dict[str, Any]:  # noqa: D102
        return self.log.round_report()

    def run_report(self) -> dict[str, Any]:  # noqa: D102
        return self.log.run_report()

    def _sent(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        for m in messages:
            if m.metadata.message_type.startswith(MessageType.EVALUATE):
                config = m.content.config_records.get(keys.CONFIG)
                rnd = config.get(keys.SERVER_ROUND, 0) if config is not None else 0
                self._rounds[m.metadata.dst_node_id] = int(rnd)  # type: ignore[arg-type]
                if self._namer is None and config is not None:
                    config[keys.REPORT_CLIENT] = True
        return messages

    def _received(self, replies: Iterable[Message]) -> list[Message]:
        replies = list(replies)
        for reply in replies:
            node = reply.metadata.src_node_id
            rnd = self._rounds.pop(node, None)
            if rnd is None or reply.has_error():
                continue
            metrics = record_of(reply.content, keys.METRICS, MetricRecord)
            if metrics is not None:
                self.log.add(rnd, self._name(reply), dict(metrics))
        return replies

    def _name(self, reply: Message) -> str:
        node = reply.metadata.src_node_id
        if self._namer is not None:
            return self._namer(node)
        info = reply.content.config_records.get(keys.CLIENT_INFO)
        return str(info[keys.CLIENT_NAME]) if info is not None else str(node)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self.inner.push_messages(self._sent(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self._received(self.inner.pull_messages(message_ids))

    def send_and_receive(  # noqa: D102
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self._received(self.inner.send_and_receive(self._sent(messages), timeout=timeout))


def engine_namer(grid: Grid) -> Callable[[int], str] | None:
    """The engine grid's node names (a :class:`~fedflower.engine.wrapper.NamesNodes`), or None."""
    return grid.node_name if isinstance(grid, NamesNodes) else None
