"""The wire format of models and compressed arrays in Flower records, shared by both sides.

A model travels as an ``ArrayRecord`` keyed by its Keras variable paths
(``variable.path``, e.g. ``hidden_0/kernel``), not by position: Keras 3 names a model's
variables the same way on TensorFlow, JAX and PyTorch, so a server on one backend and
clients on others exchange one model, and a mismatch names the variable that differs
(:func:`model_record`, :func:`arrays_for`).

The ClientApp's :func:`~fedflower.client.compression.compression_mod` and the server's
:class:`~fedflower.server.compression.CompressedGrid` agree on it: a
:data:`~fedflower.keys.COMPRESSION` ``ConfigRecord`` describing the codecs, and an
``ArrayRecord`` of the codec's encoded parts (:mod:`fedflower.aggregation.codecs`).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.common.constant import SType

from fedflower import keys
from fedflower.aggregation.codecs import Codec, decode_arrays
from fedflower.errors import ConfigError, ModelMismatch

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


NPY_MAGIC = b"\x93NUMPY"


def to_numpy(array: Array) -> np.ndarray:
    """``array.numpy()``, with the NPY header parsed once per distinct header.

    Flower's ``Array`` holds NumPy's ``.npy`` bytes; ``numpy.load`` parses each array's
    header with ``ast.literal_eval``, which costs more than copying a small array. Arrays of
    one model repeat the same few headers, so each is parsed once (by NumPy's own reader)
    and the data copied out after it. Anything but plain ``.npy`` data goes to ``numpy()``.
    """
    data = array.data
    version = data[6] if array.stype == SType.NUMPY and data[:6] == NPY_MAGIC else 0
    if version not in (1, 2):
        return array.numpy()
    size = 2 if version == 1 else 4  # bytes of the header's length
    start = 8 + size + int.from_bytes(data[8 : 8 + size], "little")
    dtype, shape, fortran = _npy_header(bytes(data[:start]))
    if dtype.hasobject or dtype.subdtype is not None:
        return array.numpy()
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")


@functools.lru_cache(maxsize=4096)
def _npy_header(header: bytes) -> tuple[np.dtype[Any], tuple[int, ...], bool]:
    """Dtype, shape and Fortran order of an ``.npy`` header (magic and version included)."""
    stream = io.BytesIO(header)
    major, _ = np.lib.format.read_magic(stream)
    read = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read(stream)
    return dtype, tuple(shape), bool(fortran)


def to_record(flat: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ``ArrayRecord`` holding the encoded parts as they are."""
    return ArrayRecord({key: Array(np.ascontiguousarray(a)) for key, a in flat.items()})


def from_record(record: ArrayRecord) -> tuple[list[str], list[np.ndarray]]:
    """Names and decoded arrays of an encoded ``ArrayRecord``."""
    return decode_arrays({key: to_numpy(array) for key, array in record.items()})


def named_record(names: Sequence[str], arrays: Sequence[np.ndarray]) -> ArrayRecord:
    """A plain ``ArrayRecord`` of named arrays."""
    return ArrayRecord({k: Array(np.asarray(a)) for k, a in zip(names, arrays, strict=True)})


def variable_names(model: Any) -> list[str]:
    """A Keras model's variable paths in ``model.weights`` order: the keys of its arrays.

    Raises
    ------
    ConfigError
        If two variables share a path (layers of the same name in nested models): name the
        layers so each variable has its own path.
    """
    names = [str(v.path) for v in model.weights]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(
                f"model variable paths must be unique, got {name!r} twice; give the layers "
                "distinct names"
            )
        seen.add(name)
    return names


def model_record(model: Any) -> ArrayRecord:
    """The model's weights as an ``ArrayRecord`` keyed by variable path."""
    return named_record(variable_names(model), model.get_weights())


def arrays_for(
    record: ArrayRecord,
    names: Sequence[str],
    shapes: Sequence[tuple[int, ...]] | None = None,
    what: str = "the received model",
) -> list[np.ndarray]:
    """The record's arrays in the order of ``names`` (a model's variable paths).

    Parameters
    ----------
    record : ArrayRecord
        Arrays keyed by variable path, in any order.
    names : sequence of str
        The receiving model's variable paths.
    shapes : sequence of tuple, optional
        The receiving model's variable shapes, checked when given.
    what : str
        How the record is named in the error.

    Raises
    ------
    ModelMismatch
        One line naming the first variable that is missing, extra or of another shape.
    """
    reason = mismatch(list(record.keys()), names)
    arrays = [to_numpy(record[name]) for name in names] if reason is None else []
    if reason is None and shapes is not None:
        reason = shape_mismatch(names, [a.shape for a in arrays], shapes)
    if reason is not None:
        raise ModelMismatch(
            f"{what} does not fit this model: {reason}; every node must build the same model "
            "(same model config, same layer names)"
        )
    return arrays


def mismatch(got: Sequence[str], expected: Sequence[str]) -> str | None:
    """The first variable ``got`` lacks or adds compared to ``expected`` (``None``: same set)."""
    have = set(got)
    for name in expected:
        if name not in have:
            return f"variable {name!r} is missing (received {_head(got)})"
    wanted = set(expected)
    for name in got:
        if name not in wanted:
            return f"variable {name!r} is not in this model (which has {_head(expected)})"
    return None


def shape_mismatch(
    names: Sequence[str], got: Sequence[tuple[int, ...]], expected: Sequence[tuple[int, ...]]
) -> str | None:
    """The first variable whose shape differs (``None``: all equal)."""
    for name, a, b in zip(names, got, expected, strict=True):
        if tuple(a) != tuple(b):
            return f"variable {name!r} has shape {tuple(a)}, this model's has {tuple(b)}"
    return None


def _head(names: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(repr(x) for x in list(names)[:n])
    return shown + (", ..." if len(names) > n else "")


def reordered(
    record: ArrayRecord, names: Sequence[str], arrays: Sequence[np.ndarray]
) -> ArrayRecord:
    """``arrays`` (in the order of ``names``) keyed as ``record`` is, in its key order.

    A client replies in the order the server sent, whatever order its backend lists its
    variables in.
    """
    by_name = dict(zip(names, arrays, strict=True))
    order = list(record.keys())
    return named_record(order, [by_name[k] for k in order])
