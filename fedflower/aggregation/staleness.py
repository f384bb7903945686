"""Staleness-aware aggregation for asynchronous federated learning, in pure NumPy.

An asynchronous server applies a client's update while other clients are still training, so
an update may have been computed from a model that is ``tau`` server versions old (its
*staleness*). This module holds the math the asynchronous strategies share; no Flower, no
TensorFlow:

* staleness functions ``s(tau)`` that down-weight stale updates (Xie et al., "Asynchronous
  Federated Optimization", 2019, arXiv:1903.03934, section 5.2): :class:`Constant`,
  :class:`Polynomial` ``(tau + 1) ** -a`` and :class:`Hinge`;
* :class:`FedBuffServer`, the buffered aggregation of FedBuff (Nguyen et al., "Federated
  Learning with Buffered Asynchronous Aggregation", AISTATS 2022, arXiv:2106.06639,
  Algorithm 1): client deltas are streamed, staleness-weighted, into one accumulator and the
  server model moves once ``K`` updates have been folded;
* :func:`mix`, FedAsync's update ``x <- (1 - alpha_t) x + alpha_t x_client`` with
  ``alpha_t = alpha * s(tau)`` (arXiv:1903.03934, Algorithm 1).

Memory does not grow with the buffer size: one float64 accumulator per layer.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import numpy as np

from fedflower.aggregation.mean import WeightedMean
from fedflower.aggregation.optimizers import ServerOptimizer
from fedflower.checks import check_choice, check_number
from fedflower.errors import ConfigError, UpdateRejected

Arrays = list[np.ndarray]
Step = Callable[[Arrays, Arrays], Arrays]
"""A server step: ``(model, mean_delta) -> new model``."""


def _check_tau(tau: int) -> int:
    if isinstance(tau, bool) or not isinstance(tau, int | np.integer) or tau < 0:
        raise ValueError(f"staleness must be an integer >= 0, got {tau!r}")
    return int(tau)


def _check_param(name: str, value: float) -> float:
    return float(check_number(f"staleness.{name}", value, minimum=0))


class StalenessFn(ABC):
    """A weight ``s(tau)`` in ``(0, 1]`` for an update that is ``tau`` versions stale."""

    name: ClassVar[str]

    @abstractmethod
    def __call__(self, tau: int) -> float:
        """Weight of an update computed from a model ``tau`` server versions old."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, *sorted(vars(self).items())))


class Constant(StalenessFn):
    """``s(tau) = 1``: every update counts fully, however stale."""

    name = "constant"

    def __call__(self, tau: int) -> float:  # noqa: D102
        _check_tau(tau)
        return 1.0


class Polynomial(StalenessFn):
    """``s(tau) = (tau + 1) ** -a`` (arXiv:1903.03934; FedBuff uses ``a = 0.5``).

    Parameters
    ----------
    a : float
        Decay exponent, ``>= 0`` (0 gives :class:`Constant`).
    """

    name = "polynomial"

    def __init__(self, a: float = 0.5) -> None:
        self.a = _check_param("a", a)

    def __call__(self, tau: int) -> float:  # noqa: D102
        return float((_check_tau(tau) + 1.0) ** (-self.a))


class Hinge(StalenessFn):
    """``s(tau) = 1`` if ``tau <= b`` else ``1 / (a (tau - b) + 1)`` (arXiv:1903.03934).

    Parameters
    ----------
    a : float
        Decay rate beyond the hinge, ``>= 0``.
    b : float
        Staleness up to which updates count fully, ``>= 0``.
    """

    name = "hinge"

    def __init__(self, a: float = 10.0, b: float = 4.0) -> None:
        self.a = _check_param("a", a)
        self.b = _check_param("b", b)

    def __call__(self, tau: int) -> float:  # noqa: D102
        tau = _check_tau(tau)
        if tau <= self.b:
            return 1.0
        return 1.0 / (self.a * (tau - self.b) + 1.0)


STALENESS_FUNCTIONS: dict[str, type[StalenessFn]] = {
    cls.name: cls for cls in (Constant, Polynomial, Hinge)
}


def make_staleness(spec: str | Mapping[str, Any] | StalenessFn | None) -> StalenessFn:
    """Build a staleness function from its name or a ``{"name": ..., **params}`` mapping.

    Examples
    --------
    >>> make_staleness("polynomial")(3)
    0.5
    >>> make_staleness({"name": "hinge", "a": 1.0, "b": 2})(4)
    0.3333333333333333
    """
    if isinstance(spec, StalenessFn):
        return spec
    if spec is None:
        return Constant()
    params: dict[str, Any] = {}
    if isinstance(spec, str):
        name = spec
    elif isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
    else:
        raise ConfigError(
            f"staleness must be a name or a mapping with 'name', got {type(spec).__name__}"
        )
    check_choice("staleness.name", name, STALENESS_FUNCTIONS)
    cls = STALENESS_FUNCTIONS[name]
    # parameters of the other functions (left over after switching ``name`` by an override)
    # are ignored; anything else is a typo and fails below
    accepted = set(inspect.signature(cls).parameters)
    others = {p for c in STALENESS_FUNCTIONS.values() for p in inspect.signature(c).parameters}
    params = {k: v for k, v in params.items() if k in accepted or k not in others}
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"staleness {name!r} got bad parameters {params}: {exc}") from exc


def delta(client: Sequence[np.ndarray], start: Sequence[np.ndarray]) -> Arrays:
    """``client - start`` per layer, in float64: the update a client made to its start model."""
    if len(client) != len(start):
        raise UpdateRejected(f"update has {len(client)} arrays, its start model {len(start)}")
    return [np.subtract(c, s, dtype=np.float64) for c, s in zip(client, start, strict=True)]


def _cast_like(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    dtype = np.asarray(like).dtype
    if np.issubdtype(dtype, np.integer):
        values = np.rint(values)
    return values.astype(dtype, copy=False)


def apply_delta(
    model: Sequence[np.ndarray], mean_delta: Sequence[np.ndarray], server_lr: float = 1.0
) -> Arrays:
    """The plain server step ``x + server_lr * mean_delta`` (FedBuff's), in each layer's dtype."""
    return [
        _cast_like(np.add(x, server_lr * np.asarray(d), dtype=np.float64), x)
        for x, d in zip(model, mean_delta, strict=True)
    ]


def optimizer_step(optimizer: ServerOptimizer) -> Step:
    """A server step through a :class:`~fedflower.aggregation.ServerOptimizer`.

    The optimizer sees ``model + mean_delta`` as the clients' target, i.e. the buffer's mean
    delta as its pseudo-gradient (FedBuff with a server optimizer, arXiv:2106.06639 sec. 3).
    """

    def step(model: Arrays, mean_delta: Arrays) -> Arrays:
        return optimizer.step(model, apply_delta(model, mean_delta))

    return step


class StalenessBuffer:
    """Stream up to ``size`` deltas into ``sum_i w_i s(tau_i) delta_i / sum_i w_i``.

    The mean is normalized by the client weights ``w_i`` alone, so stale updates shrink the
    step instead of only re-weighting it (with ``w_i = 1`` this is FedBuff's ``1/K``
    normalization; with ``w_i`` = examples and constant ``s`` it is FedAvg's weighted mean).
    The deltas are folded by :class:`~fedflower.aggregation.WeightedMean` (float64, block by
    block) with weights ``w_i s(tau_i)``; its mean is rescaled by
    ``sum_i w_i s(tau_i) / sum_i w_i`` (exactly 1 with constant staleness).

    Parameters
    ----------
    size : int
        ``K``, the number of updates that fill the buffer.
    staleness : StalenessFn
        The down-weighting ``s(tau)``.
    """

    def __init__(self, size: int, staleness: StalenessFn | None = None) -> None:
        self.size = check_number("buffer_size", size, minimum=1, integer=True)
        self.staleness = staleness or Constant()
        self._mean = WeightedMean()
        self.total_weight = 0.0
        self.count = 0

    @property
    def full(self) -> bool:
        """Whether ``size`` updates have been added since the last :meth:`take`."""
        return self.count >= self.size

    def add(self, update: Sequence[np.ndarray], weight: float, staleness: int) -> bool:
        """Fold one delta with its client weight and staleness; return whether the buffer is full.

        Raises
        ------
        UpdateRejected
            If the weight is negative or not finite, or the shapes differ from earlier updates.
        """
        if self.full:
            raise ValueError(f"the buffer already holds {self.size} updates; call take() first")
        factor = float(weight) * self.staleness(staleness)  # WeightedMean rejects NaN, < 0, inf
        self._mean.add([np.asarray(a, dtype=np.float64) for a in update], factor)
        self.total_weight += float(weight)
        self.count += 1
        return self.full

    def take(self) -> Arrays:
        """Return the buffer's weighted mean delta (float64) and empty the buffer."""
        if self.count == 0:
            raise ValueError("the buffer is empty")
        if self.total_weight <= 0:
            raise UpdateRejected("the total weight of the buffered updates is zero")
        mean = self._mean.result()
        scale = self._mean.total_weight / self.total_weight
        if scale != 1.0:
            for m in mean:
                m *= scale
        self._mean.reset()
        self.total_weight = 0.0
        self.count = 0
        return mean

    def state_dict(self) -> dict[str, Any]:
        """The pending weighted sum, its client weight and count (for a checkpoint)."""
        return {
            "mean": self._mean.state_dict(),
            "total_weight": self.total_weight,
            "count": self.count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._mean.load_state_dict(state["mean"])
        self.total_weight = float(state["total_weight"])
        self.count = int(state["count"])


class FedBuffServer:
    """FedBuff's server state: the global model, its version and the update buffer.

    Parameters
    ----------
    model : list of ndarray
        The initial global model (version 0).
    buffer_size : int
        ``K``: the server model moves once every ``K`` accepted updates.
    staleness : StalenessFn, optional
        Down-weighting of stale updates; constant by default.
    server_lr : float
        Server learning rate ``eta_g`` of the default step ``x <- x + eta_g * mean_delta``.
    step : callable, optional
        ``(model, mean_delta) -> new model``, e.g. :func:`optimizer_step` of a server
        optimizer; overrides ``server_lr``.
    optimizer : ServerOptimizer, optional
        A server optimizer on the buffer's mean delta (:func:`optimizer_step`); overrides
        ``server_lr`` and ``step``, and its moments are part of :meth:`state_dict`.

    Examples
    --------
    >>> server = FedBuffServer([np.zeros(2)], buffer_size=2)
    >>> server.add([np.array([1.0, 0.0])], weight=1.0, staleness=0)
    False
    >>> server.add([np.array([0.0, 1.0])], weight=3.0, staleness=0)
    True
    >>> server.version, server.model[0].tolist()
    (1, [0.25, 0.75])
    """

    def __init__(
        self,
        model: Sequence[np.ndarray],
        buffer_size: int,
        staleness: StalenessFn | None = None,
        server_lr: float = 1.0,
        step: Step | None = None,
        optimizer: ServerOptimizer | None = None,
    ) -> None:
        server_lr = check_number("server_lr", server_lr, minimum=0, min_open=True)
        self.model: Arrays = [np.asarray(a) for a in model]
        self.buffer = StalenessBuffer(buffer_size, staleness)
        self.optimizer = optimizer
        if optimizer is not None:
            step = optimizer_step(optimizer)
        self.step = step or partial(apply_delta, server_lr=server_lr)
        self.version = 0

    def state_dict(self) -> dict[str, Any]:
        """Model, version, buffer and server-optimizer moments (for a checkpoint)."""
        return {
            "model": [np.array(a) for a in self.model],
            "version": self.version,
            "buffer": self.buffer.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.model = [np.array(a) for a in state["model"]]
        self.version = int(state["version"])
        self.buffer.load_state_dict(state["buffer"])
        if self.optimizer is not None and state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])

    def add(self, update: Sequence[np.ndarray], weight: float, staleness: int) -> bool:
        """Fold one client delta; return whether the global model was updated."""
        if not self.buffer.add(update, weight, _check_tau(staleness)):
            return False
        self.model = self.step(self.model, self.buffer.take())
        self.version += 1
        return True


def mix(model: Sequence[np.ndarray], client: Sequence[np.ndarray], alpha: float) -> Arrays:
    """FedAsync's update ``(1 - alpha) * model + alpha * client``, layer by layer.

    Parameters
    ----------
    model : list of ndarray
        The current global model.
    client : list of ndarray
        The client's trained weights.
    alpha : float
        Mixing weight in ``[0, 1]`` (``alpha * s(tau)`` in FedAsync).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"mixing weight must be in [0, 1], got {alpha!r}")
    if len(model) != len(client):
        raise UpdateRejected(f"update has {len(client)} arrays, the model has {len(model)}")
    out = []
    for x, c in zip(model, client, strict=True):
        if np.shape(x) != np.shape(c):
            raise UpdateRejected(
                f"update array of shape {np.shape(c)} does not match {np.shape(x)}"
            )
        mixed = np.multiply(x, 1.0 - alpha, dtype=np.float64)
        mixed += np.multiply(c, alpha, dtype=np.float64)
        out.append(_cast_like(mixed, x))
    return out
