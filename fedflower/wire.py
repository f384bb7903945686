"""The wire format of compressed arrays in Flower records, shared by both sides.

The ClientApp's :func:`~fedflower.client.compression.compression_mod` and the server's
:class:`~fedflower.server.compression.CompressedGrid` agree on it: a
:data:`~fedflower.keys.COMPRESSION` ``ConfigRecord`` describing the codecs, and an
``ArrayRecord`` of the codec's encoded parts (:mod:`fedflower.aggregation.codecs`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord

from fedflower import keys
from fedflower.aggregation.codecs import Codec, decode_arrays

BASE_RECEIVED = "received"
"""A reply's arrays are its update from the model it received; the server adds its model."""
BASE_NONE = "none"
"""A reply's arrays are what the client returned (already an update, e.g. FedSGD's)."""


def codec_config(up: Codec, down: str, error_feedback: bool, seed: int = 0) -> ConfigRecord:
    """The :data:`~fedflower.keys.COMPRESSION` record sent with a model.

    ``seed`` (the run's) seeds the clients' stochastic rounding with the round and node id.
    """
    return ConfigRecord(
        {
            keys.COMPRESS_UP: up.name,
            keys.COMPRESS_DOWN: down,
            keys.COMPRESS_FRACTION: float(up.fraction),
            keys.COMPRESS_PER_CHANNEL: bool(up.per_channel),
            keys.COMPRESS_STOCHASTIC: bool(up.stochastic),
            keys.COMPRESS_MIN_ELEMENTS: int(up.min_elements),
            keys.COMPRESS_VALUE_DTYPE: up.value_dtype,
            keys.COMPRESS_FEEDBACK: bool(error_feedback),
            keys.COMPRESS_SEED: int(seed),
        }
    )


def codec_from_config(record: Mapping[str, object]) -> Codec:
    """The update codec a :func:`codec_config` record describes."""
    return Codec(
        name=str(record[keys.COMPRESS_UP]),
        fraction=float(record[keys.COMPRESS_FRACTION]),  # type: ignore[arg-type]
        per_channel=bool(record[keys.COMPRESS_PER_CHANNEL]),
        stochastic=bool(record[keys.COMPRESS_STOCHASTIC]),
        min_elements=int(record[keys.COMPRESS_MIN_ELEMENTS]),  # type: ignore[call-overload]
        value_dtype=str(record[keys.COMPRESS_VALUE_DTYPE]),
    )


def to_record(flat: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ``ArrayRecord`` holding the encoded parts as they are."""
    return ArrayRecord({key: Array(np.ascontiguousarray(a)) for key, a in flat.items()})


def from_record(record: ArrayRecord) -> tuple[list[str], list[np.ndarray]]:
    """Names and decoded arrays of an encoded ``ArrayRecord``."""
    return decode_arrays({key: array.numpy() for key, array in record.items()})


def named_record(names: Sequence[str], arrays: Sequence[np.ndarray]) -> ArrayRecord:
    """A plain ``ArrayRecord`` of named arrays."""
    return ArrayRecord({k: Array(np.asarray(a)) for k, a in zip(names, arrays, strict=True)})
