"""Aggregation math in pure NumPy: no Flower, no TensorFlow.

Every strategy folds client updates through these functions, so the math is written and
tested once. Updates are streamed into one float64 accumulator per layer: memory does not
grow with the number of clients.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from fedflower.errors import UpdateRejected

Arrays = list[np.ndarray]


class WeightedMean:
    """Streaming weighted mean of lists of arrays (one accumulator, however many updates).

    Examples
    --------
    >>> acc = WeightedMean()
    >>> acc.add([np.array([1.0, 3.0])], 1.0)
    >>> acc.add([np.array([3.0, 5.0])], 3.0)
    >>> acc.result()[0].tolist()
    [2.5, 4.5]
    """

    def __init__(self) -> None:
        self._sums: Arrays | None = None
        self._scratch: Arrays = []
        self._dtypes: list[np.dtype] = []
        self.total_weight = 0.0
        self.count = 0

    def add(self, arrays: Sequence[np.ndarray], weight: float) -> None:
        """Fold one update with a non-negative weight into the accumulator."""
        if not np.isfinite(weight) or weight < 0:
            raise UpdateRejected(f"aggregation weight must be finite and >= 0, got {weight!r}")
        if self._sums is None:
            self._sums = [np.zeros(np.shape(a), dtype=np.float64) for a in arrays]
            self._scratch = [np.empty(np.shape(a), dtype=np.float64) for a in arrays]
            self._dtypes = [np.asarray(a).dtype for a in arrays]
        elif len(arrays) != len(self._sums):
            raise UpdateRejected(
                f"update has {len(arrays)} arrays, the first update had {len(self._sums)}"
            )
        for acc, arr in zip(self._sums, arrays, strict=True):  # check all before adding any
            if np.shape(arr) != acc.shape:
                raise UpdateRejected(
                    f"update array of shape {np.shape(arr)} does not match {acc.shape}"
                )
        for acc, tmp, arr in zip(self._sums, self._scratch, arrays, strict=True):
            np.multiply(arr, weight, out=tmp)
            acc += tmp
        self.total_weight += float(weight)
        self.count += 1

    def result(self) -> Arrays:
        """Return the weighted mean, cast back to each array's dtype (integers rounded)."""
        if self._sums is None:
            raise ValueError("no update was added")
        if self.total_weight <= 0:
            raise UpdateRejected("the total weight of the updates is zero")
        out = []
        for acc, dtype in zip(self._sums, self._dtypes, strict=True):
            mean = acc / self.total_weight
            if np.issubdtype(dtype, np.integer):
                mean = np.rint(mean)
            out.append(mean.astype(dtype, copy=False))
        return out


def weighted_mean(updates: Iterable[tuple[Sequence[np.ndarray], float]]) -> Arrays:
    """Weighted mean of ``(arrays, weight)`` pairs, layer by layer.

    Parameters
    ----------
    updates : iterable of (list of ndarray, float)
        Each client's arrays and its weight (e.g. its number of training examples).

    Returns
    -------
    list of ndarray
        ``sum_k w_k * x_k / sum_k w_k`` for every layer, in the layers' own dtypes.
    """
    acc = WeightedMean()
    for arrays, weight in updates:
        acc.add(arrays, weight)
    return acc.result()


def check_update(arrays: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> None:
    """Raise ``UpdateRejected`` unless ``arrays`` has the reference's shapes and finite values.

    Parameters
    ----------
    arrays : list of ndarray
        The update a client sent.
    reference : list of ndarray
        The global model the update must match, layer by layer.
    """
    if len(arrays) != len(reference):
        raise UpdateRejected(f"update has {len(arrays)} arrays, the model has {len(reference)}")
    for i, (arr, ref) in enumerate(zip(arrays, reference, strict=True)):
        if np.shape(arr) != np.shape(ref):
            raise UpdateRejected(
                f"array {i} has shape {np.shape(arr)}, the model's has {np.shape(ref)}"
            )
        if np.issubdtype(np.asarray(arr).dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise UpdateRejected(f"array {i} contains NaN or infinite values")
