"""Aggregation math in pure NumPy: no Flower, no TensorFlow.

Every strategy folds client updates through these functions, so the math is written and
tested once. Updates are streamed into one accumulator per layer (float64 by default),
block by block: memory does not grow with the number of clients.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from fedflower.errors import ConfigError, UpdateRejected

Arrays = list[np.ndarray]


CHUNK = 1 << 15
"""Elements per block when folding updates: the block's scratch stays in the CPU cache."""

GROUP = 8
"""Updates folded per pass over the accumulator by :func:`weighted_mean` and ``add_many``."""

ACCUMULATORS = ("float64", "native")


def _blocks(n: int) -> Iterable[slice]:
    return (slice(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK))


class WeightedMean:
    """Streaming weighted mean of lists of arrays (one accumulator, however many updates).

    Updates are folded block by block (:data:`CHUNK` elements), so the only full-size
    memory is the accumulator; several updates given together (:meth:`add_many`,
    :func:`weighted_mean`) are folded in one pass over it.

    Parameters
    ----------
    accumulator : {"float64", "native"}
        ``float64`` (default) multiplies and sums in float64: float32 products are exact and
        the float32 result does not depend on the order of the updates. ``native`` keeps
        float32 (and float16) updates in float32, about twice as fast on large models
        (see ``bench/aggregation.py``) with float32 rounding (relative error ~1e-7 * sqrt(K)).
        Integer layers always accumulate in float64.

    Examples
    --------
    >>> acc = WeightedMean()
    >>> acc.add([np.array([1.0, 3.0])], 1.0)
    >>> acc.add([np.array([3.0, 5.0])], 3.0)
    >>> acc.result()[0].tolist()
    [2.5, 4.5]
    """

    def __init__(self, accumulator: str = "float64") -> None:
        if accumulator not in ACCUMULATORS:
            raise ConfigError(
                f"accumulator must be one of {', '.join(ACCUMULATORS)}, got {accumulator!r}"
            )
        self.accumulator = accumulator
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
            np.zeros(np.shape(a), dtype=self._acc_dtype(d))
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
                out = flat[block]
                t = tmp[: out.size]
                for x, w in xs:
                    np.multiply(x[block], w, out=t, dtype=acc.dtype)
                    np.add(out, t, out=out)
        self.total_weight += float(sum(w for _, w in updates))
        self.count += len(updates)

    def result(self) -> Arrays:
        """Return the weighted mean, cast back to each array's dtype (integers rounded)."""
        if self._sums is None:
            raise ValueError("no update was added")
        if self.total_weight <= 0:
            raise UpdateRejected("the total weight of the updates is zero")
        out = []
        for acc, tmp, dtype in zip(self._sums, self._scratch, self._dtypes, strict=True):
            mean = np.empty(acc.shape, dtype=dtype)
            flat, target = acc.reshape(-1), mean.reshape(-1)
            for block in _blocks(flat.size):
                t = tmp[: block.stop - block.start]
                np.divide(flat[block], self.total_weight, out=t)
                if np.issubdtype(dtype, np.integer):
                    np.rint(t, out=t)
                target[block] = t
            out.append(mean)
        return out


def weighted_mean(
    updates: Iterable[tuple[Sequence[np.ndarray], float]], accumulator: str = "float64"
) -> Arrays:
    """Weighted mean of ``(arrays, weight)`` pairs, layer by layer.

    The updates are consumed :data:`GROUP` at a time, each group in one pass over the
    accumulator (memory: the accumulator plus the group's references, whatever the count).

    Parameters
    ----------
    updates : iterable of (list of ndarray, float)
        Each client's arrays and its weight (e.g. its number of training examples).
    accumulator : {"float64", "native"}
        Precision of the sums (see :class:`WeightedMean`).

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


def _check_range(name: str, value: float, low: float, high: float | None = None) -> float:
    value = float(value)
    ok = np.isfinite(value) and value >= low and (high is None or value < high)
    if not ok:
        allowed = f"[{low}, {high})" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    return value


class ServerOptimizer:
    """A server-side optimizer on the averaged update (Reddi et al. 2021, arXiv:2003.00295).

    Each round the strategy averages the clients' models into ``target``; the optimizer treats
    ``delta = target - params`` (the paper's pseudo-gradient ``Delta_t``, pointing downhill) as
    the round's update and returns the next global model. State (momentum, second moments)
    lives here, in the parameters' dtypes. Arrays that are not floating point (counters) are
    taken from ``target`` unchanged.
    """

    def step(self, params: Sequence[np.ndarray], target: Sequence[np.ndarray]) -> Arrays:
        """Return the next global model from the current one and the clients' mean model."""
        if len(params) != len(target):
            raise UpdateRejected(f"target has {len(target)} arrays, the model has {len(params)}")
        out: Arrays = []
        floats = []
        for i, (x, t) in enumerate(zip(params, target, strict=True)):
            if np.shape(x) != np.shape(t):
                raise UpdateRejected(
                    f"array {i} of the target has shape {np.shape(t)}, the model's {np.shape(x)}"
                )
            out.append(np.array(t, copy=True))
            if _floating(x):
                floats.append(i)
        xs = [np.asarray(params[i]) for i in floats]
        deltas = [np.subtract(target[i], xs[j], dtype=xs[j].dtype) for j, i in enumerate(floats)]
        for i, new in zip(floats, self._update(xs, deltas), strict=True):
            out[i] = new
        return out

    def _update(self, params: Arrays, deltas: Arrays) -> Arrays:
        raise NotImplementedError


class ServerSGD(ServerOptimizer):
    """SGD with heavy-ball momentum on the pseudo-gradient: FedAvgM (Hsu et al. 2019).

    ``m <- momentum * m + delta``; ``x <- x + learning_rate * m`` (Flower's and PyTorch's
    convention; ``m`` starts at zero). Hsu et al., "Measuring the Effects of Non-Identical Data
    Distribution for Federated Visual Classification", arXiv:1909.06335. With ``momentum=0``
    and ``learning_rate=1`` the result is the clients' mean itself, i.e. FedAvg.

    Parameters
    ----------
    learning_rate : float
        Server learning rate ``eta`` (> 0).
    momentum : float
        Server momentum ``beta`` in [0, 1).
    """

    def __init__(self, learning_rate: float = 1.0, momentum: float = 0.0) -> None:
        self.learning_rate = _check_range("server learning rate", learning_rate, 0.0)
        if self.learning_rate == 0.0:
            raise ConfigError("server learning rate must be > 0, got 0.0")
        self.momentum = _check_range("server momentum", momentum, 0.0, 1.0)
        self.m: Arrays | None = None

    def step(self, params: Sequence[np.ndarray], target: Sequence[np.ndarray]) -> Arrays:
        """Next global model; exactly ``target`` (FedAvg) when momentum is 0 and lr is 1."""
        if self.momentum == 0.0 and self.learning_rate == 1.0:
            return [np.array(t, copy=True) for t in target]
        return super().step(params, target)

    def _update(self, params: Arrays, deltas: Arrays) -> Arrays:
        if self.momentum > 0.0:
            if self.m is None:
                self.m = [np.zeros_like(d) for d in deltas]
            for m, d in zip(self.m, deltas, strict=True):
                m *= m.dtype.type(self.momentum)
                m += d
            deltas = self.m
        lr = self.learning_rate
        return [x + x.dtype.type(lr) * d for x, d in zip(params, deltas, strict=True)]


class ServerAdaptive(ServerOptimizer):
    """Adaptive server optimizers of Reddi et al. 2021 (arXiv:2003.00295, Algorithm 2).

    ``m <- beta_1 * m + (1 - beta_1) * delta``; ``v`` is updated by the subclass;
    ``x <- x + eta * m / (sqrt(v) + tau)``. ``m`` and ``v`` start at zero (as in Flower), and
    there is no bias correction (as in the paper's Algorithm 2; Flower's FedAdam adds one).

    Parameters
    ----------
    eta : float
        Server learning rate (> 0).
    beta_1 : float
        First-moment decay in [0, 1).
    beta_2 : float
        Second-moment decay in [0, 1) (unused by Adagrad).
    tau : float
        Adaptivity ``tau`` (> 0): larger is less adaptive.
    """

    def __init__(
        self, eta: float = 0.1, beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3
    ) -> None:
        self.eta = _check_range("eta", eta, 0.0)
        self.beta_1 = _check_range("beta_1", beta_1, 0.0, 1.0)
        self.beta_2 = _check_range("beta_2", beta_2, 0.0, 1.0)
        self.tau = _check_range("tau", tau, 0.0)
        if self.eta == 0.0 or self.tau == 0.0:
            raise ConfigError(f"eta and tau must be > 0, got eta={eta!r}, tau={tau!r}")
        self.m: Arrays | None = None
        self.v: Arrays | None = None

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        raise NotImplementedError

    def _update(self, params: Arrays, deltas: Arrays) -> Arrays:
        if self.m is None or self.v is None:
            self.m = [np.zeros_like(d) for d in deltas]
            self.v = [np.zeros_like(d) for d in deltas]
        out = []
        for x, d, m, v in zip(params, deltas, self.m, self.v, strict=True):
            t = x.dtype.type
            m *= t(self.beta_1)
            m += t(1.0 - self.beta_1) * d
            self._second_moment(v, d * d)
            out.append(x + t(self.eta) * m / (np.sqrt(v) + t(self.tau)))
        return out


class ServerAdam(ServerAdaptive):
    """FedAdam's server step: ``v <- beta_2 * v + (1 - beta_2) * delta**2``."""

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        v *= v.dtype.type(self.beta_2)
        v += v.dtype.type(1.0 - self.beta_2) * d2


class ServerYogi(ServerAdaptive):
    """FedYogi's server step: ``v <- v - (1 - beta_2) * delta**2 * sign(v - delta**2)``."""

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        v -= v.dtype.type(1.0 - self.beta_2) * d2 * np.sign(v - d2)


class ServerAdagrad(ServerAdaptive):
    """FedAdagrad's server step: ``v <- v + delta**2``."""

    def _second_moment(self, v: np.ndarray, d2: np.ndarray) -> None:
        v += d2
