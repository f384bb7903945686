"""Server side of compression: a Grid wrapper that encodes models and decodes updates.

Every message a strategy sends that carries a model gets the
:data:`~fedflower.keys.COMPRESSION` record (and, with a ``down`` codec, its model encoded);
every training reply is decoded back to full weights, ``w + update`` with ``w`` the exact
global model that was sent (not its lossy encoding), before the strategy sees it. Strategies
(synchronous, FedBuff, FedAsync, the DP wrappers) therefore need no change, and the metering
grid inside this wrapper counts the encoded bytes. Replies that fail to decode lose their
arrays, so the checked aggregation rejects them with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedflower import keys
from fedflower.aggregation.codecs import Codec, codecs_from_options, encode_arrays
from fedflower.engine.metered import message_nbytes
from fedflower.engine.wrapper import GridWrapper
from fedflower.errors import UpdateRejected
from fedflower.wire import (
    BASE_RECEIVED,
    codec_config,
    from_record,
    named_record,
    to_record,
)

log = logging.getLogger(__name__)


class CompressedGrid(GridWrapper):
    """Encode the models sent through ``grid`` and decode the updates received.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The (metered) grid; it sees the encoded messages.
    up : Codec
        How clients encode their updates.
    down : Codec
        How the server encodes models (``none``, ``fp16`` or ``int8``).
    error_feedback : bool
        Clients keep what encoding lost and add it to their next update.
    seed : int
        Seeds stochastic rounding (server: per round; clients: per round and node).
    """

    def __init__(
        self, grid: Grid, up: Codec, down: Codec, error_feedback: bool = False, seed: int = 0
    ) -> None:
        super().__init__(grid)
        self.up, self.down, self.seed = up, down, seed
        self._spec = codec_config(up, down.name, error_feedback, seed)
        self._sent: dict[str, list[np.ndarray]] = {}
        self._pushes = 0
        self.raw = {"down": 0, "up": 0}
        self.wire = {"down": 0, "up": 0}
        self._totals = {"raw_down": 0, "raw_up": 0, "wire_down": 0, "wire_up": 0}

    def _encode(self, record: ArrayRecord) -> ArrayRecord:
        if self.down.name == "none":
            return record
        self._pushes += 1
        rng = np.random.default_rng([self.seed, self._pushes])
        flat = encode_arrays(list(record.keys()), record.to_numpy_ndarrays(), self.down, rng)
        return to_record(flat)

    def _prepare(self, messages: Iterable[Message]) -> list[tuple[Message, list[np.ndarray]]]:
        """Give each message carrying a model its own encoded content.

        Strategies may share one content between messages; it is copied, never changed.
        Returns the training messages with the model they carry.
        """
        encoded: dict[int, tuple[ArrayRecord, list[np.ndarray]]] = {}
        sent = []
        for message in messages:
            if not message.has_content() or keys.ARRAYS not in message.content.array_records:
                continue
            raw = message_nbytes(message)
            record = message.content.array_records[keys.ARRAYS]
            if id(record) not in encoded:  # a broadcast model is encoded once
                encoded[id(record)] = (self._encode(record), record.to_numpy_ndarrays())
            wire_record, arrays = encoded[id(record)]
            content = RecordDict(dict(message.content.items()))
            content.array_records[keys.ARRAYS] = wire_record
            content.config_records[keys.COMPRESSION] = self._spec
            message.content = content
            self.raw["down"] += raw
            self.wire["down"] += message_nbytes(message)
            if message.metadata.message_type == MessageType.TRAIN:
                sent.append((message, arrays))
        return sent

    def _remember(self, sent: list[tuple[Message, list[np.ndarray]]]) -> None:
        for message, arrays in sent:
            self._sent[message.metadata.message_id] = arrays

    def _decode(self, reply: Message) -> Message:
        reference = self._sent.pop(reply.metadata.reply_to_message_id, None)
        if reply.has_error() or keys.COMPRESSION not in reply.content.config_records:
            return reply
        content = reply.content
        wire = message_nbytes(reply)
        spec = content.config_records.pop(keys.COMPRESSION)
        record = content.array_records.get(keys.ARRAYS)
        if record is None:
            return reply
        try:
            names, arrays = from_record(record)
            if spec.get(keys.COMPRESS_BASE) == BASE_RECEIVED:
                arrays = _add(reference, arrays)
        except UpdateRejected as exc:
            log.warning("update from node %s not decoded: %s", reply.metadata.src_node_id, exc)
            del content.array_records[keys.ARRAYS]
            return reply
        content.array_records[keys.ARRAYS] = named_record(names, arrays)
        self.wire["up"] += wire
        self.raw["up"] += message_nbytes(reply)
        return reply

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        messages = list(messages)
        sent = self._prepare(messages)
        ids = list(self.inner.push_messages(messages))
        self._remember(sent)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return [self._decode(r) for r in self.inner.pull_messages(message_ids)]

    def send_and_receive(  # noqa: D102
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        sent = self._prepare(messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self._remember(sent)
        return [self._decode(r) for r in replies]

    def round_report(self) -> dict[str, Any]:
        """The compression ratios (message bytes uncompressed / sent) since the last call."""
        out = _ratios(self.raw, self.wire)
        for way in ("up", "down"):
            self._totals[f"raw_{way}"] += self.raw[way]
            self._totals[f"wire_{way}"] += self.wire[way]
        self.raw = {"down": 0, "up": 0}
        self.wire = {"down": 0, "up": 0}
        return out

    def run_report(self) -> dict[str, Any]:
        """The run's compression ratios (the rounds reported so far)."""
        t = self._totals
        return _ratios(
            {"up": t["raw_up"], "down": t["raw_down"]}, {"up": t["wire_up"], "down": t["wire_down"]}
        )


def _ratios(raw: dict[str, int], wire: dict[str, int]) -> dict[str, float]:
    return {f"compression_{w}": raw[w] / wire[w] for w in ("up", "down") if wire[w]}


def _add(reference: list[np.ndarray] | None, updates: list[np.ndarray]) -> list[np.ndarray]:
    if reference is None:
        raise UpdateRejected("reply to a model this server did not send")
    if [np.shape(r) for r in reference] != [np.shape(u) for u in updates]:
        raise UpdateRejected("update's shapes differ from the model sent")
    return [
        np.add(r, u, dtype=r.dtype) if np.issubdtype(r.dtype, np.floating) else u
        for r, u in zip(reference, updates, strict=True)
    ]


def compressed_grid(grid: Grid, options: dict[str, Any] | None, seed: int = 0) -> Grid:
    """Wrap ``grid`` in a :class:`CompressedGrid` as the ``compression`` options ask."""
    if not options:
        return grid
    up, down = codecs_from_options(options)
    if up.name == "none" and down.name == "none":
        return grid
    return CompressedGrid(grid, up, down, bool(options.get("error_feedback", False)), seed)
