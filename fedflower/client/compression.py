"""Compression on Flower's wire: the client mod and the record format both sides share.

When compression is on, every server -> client message that carries a model also carries a
``ConfigRecord`` named :data:`fedflower.keys.COMPRESSION`: how its model arrays are encoded
(``down``) and how the client must encode its update (``up`` and the codec's options). The
:func:`compression_mod` of every ClientApp decodes the model before the client sees it and,
after training, replaces the reply's weights by the encoded update ``w_local - w_received``
(or the reply's own update for FedSGD), with error feedback kept in the node's
``Context.state`` when asked. The server (:mod:`fedflower.server.compression`) decodes replies
before any strategy checks or folds them. Encoded arrays travel as an ``ArrayRecord`` of the
codec's parts (:mod:`fedflower.aggregation.codecs`), so metering counts what is really sent.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from fedflower import keys
from fedflower.aggregation.codecs import (
    encode_arrays,
    encode_with_feedback,
)
from fedflower.errors import UpdateRejected
from fedflower.wire import (
    BASE_NONE,
    BASE_RECEIVED,
    codec_from_config,
    from_record,
    named_record,
    to_record,
)

log = logging.getLogger(__name__)
REFUSED = "update refused by the client"
"""Start of the error reason of a training reply the client refused to encode."""


def _floating(array: np.ndarray) -> bool:
    return bool(np.issubdtype(array.dtype, np.floating))


def _residual(context: Context, shapes: list[tuple[int, ...]]) -> list[np.ndarray] | None:
    record = context.state.array_records.get(keys.COMPRESS_RESIDUAL)
    if record is None:
        return None
    residual = record.to_numpy_ndarrays()
    if [r.shape for r in residual] != shapes or not all(np.isfinite(r).all() for r in residual):
        return None
    return residual


def encode_reply(
    reply: Message,
    received: list[np.ndarray] | None,
    spec: ConfigRecord,
    context: Context,
    server_round: int,
) -> None:
    """Replace the reply's arrays by their encoded update, in place.

    ``received`` is the model the client started from (the reply is then encoded as the
    update from it), or ``None`` when the reply already is an update (FedSGD).
    """
    content = reply.content
    record = content.array_records[keys.ARRAYS]
    names, arrays = list(record.keys()), record.to_numpy_ndarrays()
    base = BASE_NONE if received is None else BASE_RECEIVED
    if received is not None:  # non-float arrays (counters, seeds) travel as they are
        arrays = [
            np.subtract(a, r, dtype=np.float32) if _floating(a) else a
            for a, r in zip(arrays, received, strict=True)
        ]
    codec = codec_from_config(spec)
    seed = int(spec.get(keys.COMPRESS_SEED, 0))  # type: ignore[arg-type]
    rng = np.random.default_rng([seed, server_round, context.node_id])
    if spec[keys.COMPRESS_FEEDBACK]:
        residual = _residual(context, [a.shape for a in arrays])
        flat, residual = encode_with_feedback(names, arrays, codec, residual, rng)
        context.state.array_records[keys.COMPRESS_RESIDUAL] = ArrayRecord(residual)
    else:
        flat = encode_arrays(names, arrays, codec, rng)
    content.array_records[keys.ARRAYS] = to_record(flat)
    content.config_records[keys.COMPRESSION] = ConfigRecord({keys.COMPRESS_BASE: base})


def compression_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: decode the received model, encode the training reply.

    A no-op for messages without a :data:`~fedflower.keys.COMPRESSION` record, so every
    ClientApp can list it (first, so that other mods see plain weights). Place mods that
    change the update (clipping, local noise, simulated attacks) after it: they act before
    the update is encoded.
    """
    content = msg.content if msg.has_content() else None
    if content is None or keys.COMPRESSION not in content.config_records:
        return call_next(msg, context)
    spec = content.config_records.pop(keys.COMPRESSION)
    record = content.array_records.get(keys.ARRAYS)
    if record is None:
        return call_next(msg, context)
    train = msg.metadata.message_type == MessageType.TRAIN
    if spec[keys.COMPRESS_DOWN] != "none":
        names, arrays = from_record(record)
        content.array_records[keys.ARRAYS] = named_record(names, arrays)
    elif train:
        arrays = record.to_numpy_ndarrays()
    reply = call_next(msg, context)
    if train and not reply.has_error() and keys.ARRAYS in reply.content.array_records:
        config = content.config_records.get(keys.CONFIG, ConfigRecord())
        received = None if config.get(keys.RETURN_UPDATE) else arrays
        server_round = int(config.get(keys.SERVER_ROUND, 0))  # type: ignore[arg-type]
        try:
            encode_reply(reply, received, spec, context, server_round)
        except UpdateRejected as exc:
            return refused(msg, context, server_round, exc)
    return reply


def refused(msg: Message, context: Context, server_round: int, exc: UpdateRejected) -> Message:
    """The error reply to a training message whose update cannot be encoded.

    The server counts it with the other failed and rejected updates (``rejected_updates``);
    the node's error-feedback residual is unchanged, so its next update is clean again.
    """
    reason = f"{REFUSED}: {exc}"
    log.warning("node %s, round %s: %s", context.node_id, server_round, reason)
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)
