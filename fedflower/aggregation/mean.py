"""Aggregation math in pure NumPy: no Flower, no TensorFlow.

Every strategy folds client updates through these functions, so the math is written and
tested once. Updates are streamed into one accumulator per layer (in the layer's float type by
default, float64 on request), block by block: memory does not grow with the number of clients.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fedflower.checks import check_choice
from fedflower.errors import UpdateRejected

Arrays = list[np.ndarray]


CHUNK = 1 << 15
"""Elements per block when folding updates: the block's scratch stays in the CPU cache."""

GROUP = 8
"""Updates folded per pass over the accumulator by :func:`weighted_mean` and ``add_many``."""

ACCUMULATORS = ("native", "float64")


def _blocks(n: int) -> Iterable[slice]:
    return (slice(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK))


class WeightedMean:
    """Streaming weighted mean of lists of arrays (one accumulator, however many updates).

    Updates are folded block by block (:data:`CHUNK` elements), so the only full-size
    memory is the accumulator; several updates given together (:meth:`add_many`,
    :func:`weighted_mean`) are folded in one pass over it.

    Parameters
    ----------
    accumulator : {"native", "float64"}
        ``native`` (default) sums float32 (and float16) layers in float32, float64 layers in
        float64: about twice as fast as float64 sums on large models and half the memory
        (``bench/aggregation.py``), with float32 rounding (relative error about 1e-7 *
        sqrt(K); the bench states the measured error). Its result depends on the order the
        updates are folded in, so callers fold in a fixed order (the strategies sort replies
        by node id). ``float64`` multiplies and sums in float64: float32 products are exact
        and the float32 result does not depend on the order of the updates. Integer layers
        always accumulate in float64.

    Examples
    --------
    >>> acc = WeightedMean()
    >>> acc.add([np.array([1.0, 3.0])], 1.0)
    >>> acc.add([np.array([3.0, 5.0])], 3.0)
    >>> acc.result()[0].tolist()
    [2.5, 4.5]
    """

    def __init__(self, accumulator: str = "native") -> None:
        self.accumulator = check_choice("accumulator", accumulator, ACCUMULATORS)
        self._sums: Arrays | None = None
        self._scratch: Arrays = []
        self._dtypes: list[np.dtype] = []
        self.total_weight = 0.0
        self.count = 0

    def _acc_dtype(self, dtype: np.dtype) -> np.dtype:
        if self.accumulator == "native" and np.issubdtype(dtype, np.floating):
            return np.result_type(dtype, np.float32)
        return np.dtype(np.float64)

    def _check(self, arrays: Sequence[np.ndarray], weight: float) -> None:
        if not np.isfinite(weight) or weight < 0:
            raise UpdateRejected(f"aggregation weight must be finite and >= 0, got {weight!r}")
        if self._sums is None:
            return
        if len(arrays) != len(self._sums):
            raise UpdateRejected(
                f"update has {len(arrays)} arrays, the first update had {len(self._sums)}"
            )
        for acc, arr in zip(self._sums, arrays, strict=True):
            if np.shape(arr) != acc.shape:
                raise UpdateRejected(
                    f"update array of shape {np.shape(arr)} does not match {acc.shape}"
                )

    def _start(self, arrays: Sequence[np.ndarray]) -> None:
        self._dtypes = [np.asarray(a).dtype for a in arrays]
        self._sums = [
            np.empty(np.shape(a), dtype=self._acc_dtype(d))
            for a, d in zip(arrays, self._dtypes, strict=True)
        ]
        self._scratch = [np.empty(min(acc.size, CHUNK), dtype=acc.dtype) for acc in self._sums]

    def add(self, arrays: Sequence[np.ndarray], weight: float) -> None:
        """Fold one update with a non-negative weight into the accumulator."""
        self.add_many([(arrays, weight)])

    def add_many(self, updates: Sequence[tuple[Sequence[np.ndarray], float]]) -> None:
        """Fold several updates in one pass over the accumulator.

        All of them are checked first: if one is rejected, none is added.
        """
        updates = list(updates)
        if not updates:
            return
        if self._sums is None:
            self._check(updates[0][0], updates[0][1])
            self._start(updates[0][0])
        for arrays, weight in updates:
            self._check(arrays, weight)
        assert self._sums is not None
        for i, (acc, tmp) in enumerate(zip(self._sums, self._scratch, strict=True)):
            flat = acc.reshape(-1)
            xs = [(np.asarray(arrays[i]).reshape(-1), acc.dtype.type(w)) for arrays, w in updates]
            for block in _blocks(flat.size):
                _fold_block(flat[block], tmp, [(x[block], w) for x, w in xs], self.count == 0)
        self.total_weight += float(sum(w for _, w in updates))
        self.count += len(updates)

    def state_dict(self) -> dict[str, Any]:
        """The running sums, dtypes, total weight and count (for a checkpoint)."""
        return {
            "sums": None if self._sums is None else [np.array(a) for a in self._sums],
            "dtypes": [d.str for d in self._dtypes],
            "total_weight": self.total_weight,
            "count": self.count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        sums = state["sums"]
        self._sums = None if sums is None else [np.array(a) for a in sums]
        self._dtypes = [np.dtype(d) for d in state["dtypes"]]
        self._scratch = [np.empty(min(a.size, CHUNK), dtype=a.dtype) for a in self._sums or []]
        self.total_weight = float(state["total_weight"])
        self.count = int(state["count"])

    def reset(self) -> None:
        """Forget the updates added so far, keeping the accumulator's memory for the next ones."""
        self.total_weight = 0.0
        self.count = 0  # the next update overwrites the accumulator

    def result(self, consume: bool = False) -> Arrays:
        """Return the weighted mean, cast back to each array's dtype (integers rounded).

        With ``consume=True`` a layer whose accumulator already has the layer's dtype (float32
        layers, by default) is divided in place and handed out: no new memory, one pass less,
        and the accumulator is then gone (the object must not be used again).
        """
        if self._sums is None or self.count == 0:
            raise ValueError("no update was added")
        if self.total_weight <= 0:
            raise UpdateRejected("the total weight of the updates is zero")
        out = []
        for acc, tmp, dtype in zip(self._sums, self._scratch, self._dtypes, strict=True):
            if acc.dtype == dtype:
                mean = acc if consume else np.empty_like(acc)
                np.divide(acc, acc.dtype.type(self.total_weight), out=mean)
                out.append(mean)
                continue
            mean = np.empty(acc.shape, dtype=dtype)
            flat, target = acc.reshape(-1), mean.reshape(-1)
            for block in _blocks(flat.size):
                t = tmp[: block.stop - block.start]
                np.divide(flat[block], self.total_weight, out=t)
                if np.issubdtype(dtype, np.integer):
                    np.rint(t, out=t)
                target[block] = t
            out.append(mean)
        if consume:
            self._sums = None
        return out


def _fold_block(
    out: np.ndarray, tmp: np.ndarray, xs: Sequence[tuple[np.ndarray, np.generic]], first: bool
) -> None:
    """``out (+)= sum_k w_k x_k`` for one block; ``first`` overwrites ``out`` (a fresh sum)."""
    t = tmp[: out.size]
    for j, (x, w) in enumerate(xs):
        if first and j == 0:
            np.multiply(x, w, out=out, dtype=out.dtype)
        else:
            np.multiply(x, w, out=t, dtype=out.dtype)
            np.add(out, t, out=out)


def weighted_mean(
    updates: Iterable[tuple[Sequence[np.ndarray], float]], accumulator: str = "native"
) -> Arrays:
    """Weighted mean of ``(arrays, weight)`` pairs, layer by layer.

    The updates are consumed :data:`GROUP` at a time, each group in one pass over the
    accumulator (memory: the accumulator plus the group's references, whatever the count).

    Parameters
    ----------
    updates : iterable of (list of ndarray, float)
        Each client's arrays and its weight (e.g. its number of training examples).
    accumulator : {"native", "float64"}
        Precision of the sums (see :class:`WeightedMean`); the result depends on the order
        of ``updates`` unless it is ``float64``.

    Returns
    -------
    list of ndarray
        ``sum_k w_k * x_k / sum_k w_k`` for every layer, in the layers' own dtypes.
    """
    acc = WeightedMean(accumulator)
    group: list[tuple[Sequence[np.ndarray], float]] = []
    for update in updates:
        group.append(update)
        if len(group) == GROUP:
            acc.add_many(group)
            group = []
    acc.add_many(group)
    return acc.result(consume=True)


def check_update(
    arrays: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
) -> None:
    """Raise ``UpdateRejected`` unless ``arrays`` has the reference's shapes and finite values.

    Parameters
    ----------
    arrays : list of ndarray
        The update a client sent.
    reference : list of ndarray
        The global model the update must match, layer by layer.
    names : list of str, optional
        The arrays' names (the model's variable paths), for the message.
    """
    if len(arrays) != len(reference):
        raise UpdateRejected(f"update has {len(arrays)} arrays, the model has {len(reference)}")
    for i, (arr, ref) in enumerate(zip(arrays, reference, strict=True)):
        what = f"array {i}" if names is None else f"variable {names[i]!r}"
        if np.shape(arr) != np.shape(ref):
            raise UpdateRejected(
                f"{what} has shape {np.shape(arr)}, the model's has {np.shape(ref)}"
            )
        if np.issubdtype(np.asarray(arr).dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise UpdateRejected(f"{what} contains NaN or infinite values")


def cast_like(arrays: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> Arrays:
    """``arrays`` in the reference's dtypes (a float64 update to a float32 model becomes float32).

    Arrays already of the right dtype are returned as they are (no copy).
    """
    return [
        np.asarray(a).astype(np.asarray(r).dtype, copy=False)
        for a, r in zip(arrays, reference, strict=True)
    ]


def subtract(minuend: Sequence[np.ndarray], subtrahend: Sequence[np.ndarray]) -> Arrays:
    """Layer-wise ``minuend - subtrahend`` in the layers' own dtypes (e.g. a model delta)."""
    if len(minuend) != len(subtrahend):
        raise UpdateRejected(f"cannot subtract {len(subtrahend)} arrays from {len(minuend)}")
    return [
        np.subtract(a, b, dtype=np.result_type(a)) for a, b in zip(minuend, subtrahend, strict=True)
    ]


def sgd_step(params: Sequence[np.ndarray], grads: Sequence[np.ndarray], lr: float) -> Arrays:
    """``params - lr * grads`` layer by layer in the parameters' dtypes.

    Arrays that are not floating point (e.g. counters) are left unchanged.
    """
    if len(params) != len(grads):
        raise UpdateRejected(f"got {len(grads)} gradient arrays for {len(params)} parameters")
    out = []
    for x, g in zip(params, grads, strict=True):
        x = np.asarray(x)
        if np.shape(g) != x.shape:
            raise UpdateRejected(f"gradient of shape {np.shape(g)} for a parameter of {x.shape}")
        if _floating(x):
            out.append(np.subtract(x, x.dtype.type(lr) * np.asarray(g, dtype=x.dtype)))
        else:
            out.append(x.copy())
    return out


def _floating(array: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(array).dtype, np.floating)
