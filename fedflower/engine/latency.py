"""How long a client takes for one task: a seeded model of compute and transfer time.

Pure NumPy (no Flower, no TensorFlow). A task's duration is

    slowdown(client) * jitter * examples * passes * seconds_per_example
    + 2 * latency_s + 8 * (bytes_down + bytes_up) / (bandwidth_mbps * 1e6)

where ``passes`` is the number of local epochs for training and ``eval_cost`` for evaluation.
Each client's ``slowdown`` is drawn once from a distribution (constant, uniform, log-normal,
Pareto), from a generator seeded by ``(seed, client)`` alone, so it does not depend on which
clients ran before; ``jitter`` is an optional per-task log-normal factor seeded by
``(seed, client, task)``. Heavy-tailed slowdowns (log-normal, Pareto) model the stragglers of
real federations; FedBuff (Nguyen et al. 2022, arXiv:2106.06639) evaluates against such
heavy-tailed client durations.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedflower.checks import check_number
from fedflower.errors import ConfigError


class Slowdown(ABC):
    """A distribution of per-client time multipliers (1 = a median client; 2 = half as fast)."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> float:
        """Draw one client's slowdown."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class Constant(Slowdown):
    """Every client has the same speed.

    Parameters
    ----------
    value : float
        The common slowdown, ``> 0``.
    """

    def __init__(self, value: float = 1.0) -> None:
        self.value = float(check_number("latency.slowdown.value", value, minimum=0, min_open=True))

    def sample(self, rng: np.random.Generator) -> float:  # noqa: D102
        return self.value


class Uniform(Slowdown):
    """Slowdowns uniform in ``[low, high]``.

    Parameters
    ----------
    low, high : float
        Bounds, ``0 < low <= high``.
    """

    def __init__(self, low: float = 0.5, high: float = 2.0) -> None:
        self.low = float(check_number("latency.slowdown.low", low, minimum=0, min_open=True))
        self.high = float(check_number("latency.slowdown.high", high, minimum=self.low))

    def sample(self, rng: np.random.Generator) -> float:  # noqa: D102
        return float(rng.uniform(self.low, self.high))


class LogNormal(Slowdown):
    """Log-normal slowdowns: ``median * exp(sigma * N(0, 1))`` (heavy right tail).

    Parameters
    ----------
    sigma : float
        Standard deviation of the log-slowdown, ``>= 0``; with ``sigma = 1`` one client in
        ten is at least 3.6x slower than the median one.
    median : float
        The median slowdown, ``> 0``.
    """

    def __init__(self, sigma: float = 1.0, median: float = 1.0) -> None:
        self.sigma = float(check_number("latency.slowdown.sigma", sigma, minimum=0))
        self.median = float(
            check_number("latency.slowdown.median", median, minimum=0, min_open=True)
        )

    def sample(self, rng: np.random.Generator) -> float:  # noqa: D102
        return float(self.median * math.exp(self.sigma * rng.standard_normal()))


class Pareto(Slowdown):
    """Pareto slowdowns: ``minimum * U ** (-1 / shape)``; infinite variance for ``shape <= 2``.

    Parameters
    ----------
    shape : float
        Tail index, ``> 0`` (smaller is heavier).
    minimum : float
        The fastest possible slowdown, ``> 0``.
    """

    def __init__(self, shape: float = 1.5, minimum: float = 1.0) -> None:
        self.shape = float(check_number("latency.slowdown.shape", shape, minimum=0, min_open=True))
        self.minimum = float(
            check_number("latency.slowdown.minimum", minimum, minimum=0, min_open=True)
        )

    def sample(self, rng: np.random.Generator) -> float:  # noqa: D102
        return float(self.minimum * (1.0 + rng.pareto(self.shape)))


@dataclass
class NoLatency:
    """``latency=none``: no latency model, so no virtual clock."""

    enabled: bool = False


@dataclass
class LatencyOptions:
    """``conf/latency/<name>.yaml``: the keys and types of a :class:`LatencyModel`.

    Hydra types the group with this dataclass (registered by
    :func:`fedflower.server.options.register`); the rules on values live in the constructors
    of :class:`LatencyModel` and of the :class:`Slowdown` named by ``slowdown._target_``, which
    the command line builds before anything is written. ``slowdown`` stays untyped: each
    distribution has its own parameters.
    """

    _target_: str = "fedflower.engine.latency.LatencyModel"
    slowdown: Any = None
    seconds_per_example: float = 1e-3
    eval_cost: float = 0.3
    bandwidth_mbps: float = 20.0
    latency_s: float = 0.05
    jitter: float = 0.0
    seed: int = 0


class LatencyModel:
    """Seeded durations of client tasks (see the module docstring for the formula).

    Parameters
    ----------
    slowdown : Slowdown
        Distribution of the per-client time multipliers.
    seconds_per_example : float
        Compute time of one example for one epoch on a client with slowdown 1.
    eval_cost : float
        Cost of evaluating one example relative to training on it for one epoch.
    bandwidth_mbps : float
        Link speed in megabits per second (both directions).
    latency_s : float
        Network latency of one message in seconds.
    jitter : float
        Sigma of a per-task log-normal factor on the compute time (0 = none).
    seed : int
        Seed of the slowdowns and the jitter.
    """

    def __init__(
        self,
        slowdown: Slowdown | None = None,
        seconds_per_example: float = 1e-3,
        eval_cost: float = 0.3,
        bandwidth_mbps: float = 20.0,
        latency_s: float = 0.05,
        jitter: float = 0.0,
        seed: int = 0,
    ) -> None:
        if slowdown is not None and not isinstance(slowdown, Slowdown):
            raise ConfigError(
                f"latency: slowdown must be a Slowdown distribution, got {slowdown!r}; "
                "use e.g. latency.slowdown._target_=fedflower.engine.latency.LogNormal"
            )
        self.slowdown = slowdown or Constant()
        self.seconds_per_example = float(
            check_number("latency.seconds_per_example", seconds_per_example, minimum=0)
        )
        self.eval_cost = float(check_number("latency.eval_cost", eval_cost, minimum=0))
        self.bandwidth_mbps = float(
            check_number("latency.bandwidth_mbps", bandwidth_mbps, minimum=0, min_open=True)
        )
        self.latency_s = float(check_number("latency.latency_s", latency_s, minimum=0))
        self.jitter = float(check_number("latency.jitter", jitter, minimum=0))
        self.seed = int(seed)
        self._slowdowns: dict[int, float] = {}

    def client_slowdown(self, client: int) -> float:
        """The time multiplier of ``client``, drawn once from ``(seed, client)``."""
        if client not in self._slowdowns:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, int(client) & 0xFFFFFFFF])
            self._slowdowns[client] = self.slowdown.sample(rng)
        return self._slowdowns[client]

    def transfer_time(self, nbytes: int) -> float:
        """Seconds to send ``nbytes`` in one message: latency plus size over bandwidth."""
        return self.latency_s + 8.0 * nbytes / (self.bandwidth_mbps * 1e6)

    def compute_time(
        self, client: int, examples: int, epochs: float = 1.0, train: bool = True, task: int = 0
    ) -> float:
        """Seconds of local computation for ``examples`` examples.

        Parameters
        ----------
        client : int
            The client (node) id.
        examples : int
            Local examples processed per pass.
        epochs : float
            Local epochs (training only).
        train : bool
            Training (``epochs`` passes) or evaluation (``eval_cost`` of one pass).
        task : int
            The task's sequence number (seeds the jitter).
        """
        passes = epochs if train else self.eval_cost
        seconds = self.client_slowdown(client) * examples * passes * self.seconds_per_example
        if self.jitter > 0:
            rng = np.random.default_rng(
                [self.seed & 0xFFFFFFFF, int(client) & 0xFFFFFFFF, int(task) & 0xFFFFFFFF]
            )
            seconds *= math.exp(self.jitter * rng.standard_normal())
        return seconds

    def duration(
        self,
        client: int,
        *,
        examples: int,
        epochs: float = 1.0,
        bytes_down: int = 0,
        bytes_up: int = 0,
        train: bool = True,
        task: int = 0,
    ) -> float:
        """Seconds from sending a task to ``client`` to receiving its reply."""
        return (
            self.transfer_time(bytes_down)
            + self.compute_time(client, examples, epochs, train, task)
            + self.transfer_time(bytes_up)
        )

    def __repr__(self) -> str:
        return (
            f"LatencyModel(slowdown={self.slowdown!r}, seconds_per_example="
            f"{self.seconds_per_example}, eval_cost={self.eval_cost}, bandwidth_mbps="
            f"{self.bandwidth_mbps}, latency_s={self.latency_s}, jitter={self.jitter}, "
            f"seed={self.seed})"
        )
