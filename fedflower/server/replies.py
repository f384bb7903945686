"""Unpacking a client's training reply into an update: the one check sync and async share.

:class:`~fedflower.server.checked.CheckedFedAvg` (synchronous rounds) and
:class:`~fedflower.server.async_strategy.AsyncStrategy` (FedBuff, FedAsync) both turn a reply
into ``(names, arrays, weight)`` here, so a malformed update is refused the same way, with the
same one-line reason, whichever loop received it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from fedflower import aggregation, wire
from fedflower.errors import UpdateRejected
from fedflower.records import record_of, records_of

Arrays = list[np.ndarray]


def unpack_reply(
    reply: Message,
    *,
    arrayrecord_key: str,
    weighted_by_key: str,
    names: Sequence[str] | None = None,
    reference: Sequence[np.ndarray] | None = None,
) -> tuple[list[str], Arrays, float]:
    """The array names, arrays and aggregation weight a training reply carries.

    Parameters
    ----------
    reply : flwr.app.Message
        A reply without error.
    arrayrecord_key : str
        The ArrayRecord holding the trained model.
    weighted_by_key : str
        The metric holding the aggregation weight (the client's number of examples); exactly
        one of the reply's metric records must carry it.
    names : sequence of str, optional
        The global model's array names (its variable paths), which the update's must equal;
        the arrays are returned in this order.
    reference : list of ndarray, optional
        The global model the update was trained from: shapes must match and values be finite
        (:func:`fedflower.aggregation.check_update`); arrays of another dtype are cast to
        the reference's (a float64 update must not turn a float32 model into float64).

    Returns
    -------
    names : list of str
    arrays : list of ndarray
    weight : float
        Finite and ``>= 0``.

    Raises
    ------
    UpdateRejected
        With the reason, if any check fails.
    """
    content = reply.content
    record = record_of(content, arrayrecord_key, ArrayRecord)
    if record is None:
        raise UpdateRejected(f"reply has no {arrayrecord_key!r} ArrayRecord")
    metrics = records_of(content, MetricRecord)
    weights = [m[weighted_by_key] for m in metrics if weighted_by_key in m]
    if len(weights) != 1:
        raise UpdateRejected(f"reply must carry exactly one {weighted_by_key!r} metric")
    weight = float(weights[0])  # type: ignore[arg-type]
    if not np.isfinite(weight) or weight < 0:
        raise UpdateRejected(f"{weighted_by_key!r} must be finite and >= 0, got {weight}")
    got = list(record.keys())
    if names is not None:
        check_names(got, list(names))
        got = list(names)  # a client on another backend may list its variables in another order
    arrays = [wire.to_numpy(record[name]) for name in got]
    if reference is not None:
        aggregation.check_update(arrays, reference, got)
        arrays = aggregation.cast_like(arrays, reference)
    return got, arrays, weight


def check_names(names: list[str], expected: list[str]) -> None:
    """Raise ``UpdateRejected`` naming the first variable an update lacks or adds."""
    reason = wire.mismatch(names, expected)
    if reason is not None:
        raise UpdateRejected(f"update does not fit the global model: {reason}")
