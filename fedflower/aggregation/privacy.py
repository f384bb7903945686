"""Differential-privacy math: clipping, the fixed-denominator mean and the privacy accountant.

DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent Language Models", ICLR
2018, arXiv:1710.06963): every client's update ``Delta_i = w_i - w`` is clipped to L2 norm
``C``; the server releases ``sum_i c_i Delta_i / D + N(0, (z C / D)^2)`` with client weights
``c_i`` in ``[0, 1]`` and a denominator ``D`` fixed before the round (the expected number of
participants). Adding or removing one client changes the sum by at most ``C``, so one round is
a Gaussian mechanism with noise multiplier ``z``, whatever the weights: example-weighted FedAvg
is bounded by capping the weights, ``c_i = min(n_i / cap, 1)``.

The accountant composes one such mechanism per round with Google's ``dp-accounting`` RDP
accountant (Mironov, "Rényi Differential Privacy", arXiv:1702.07476): a
``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` when each client takes part independently with
probability ``q`` (privacy amplification by sampling, arXiv:1908.10530), a plain
``GaussianDpEvent(z)`` otherwise (full participation, or a fixed-size sample for which no
amplification is claimed). The adjacency is client-level add/remove: neighbouring datasets
differ by all the data of one client.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np

from fedflower.aggregation.mean import Arrays, weighted_mean

RDP_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512])
"""Rényi orders the accountant optimizes epsilon over (those of TensorFlow Privacy)."""
UNCONVERGED = "_compute_log_a_frac failed to converge"
"""Start of dp-accounting's warning for a fractional order it leaves out of the minimum."""

log = logging.getLogger(__name__)


class _Unconverged(logging.Filter):
    """Drop (and count) dp-accounting's warnings about orders left out of epsilon's minimum."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(UNCONVERGED):
            self.count += 1
            return False
        return True


@contextmanager
def _orders_left_out() -> Iterator[_Unconverged]:
    """Keep dp-accounting's non-convergence warnings off the console while the block runs.

    For Poisson-sampled Gaussian events the RDP of some small fractional orders does not
    converge; dp-accounting then leaves those orders out (epsilon is the minimum over the
    others, still a valid bound) and logs one absl warning per order, which says nothing a
    user can act on. They are counted and logged once at DEBUG level instead.
    """
    absl = logging.getLogger("absl")
    dropped = _Unconverged()
    absl.addFilter(dropped)
    try:
        yield dropped
    finally:
        absl.removeFilter(dropped)
        if dropped.count:
            log.debug("%d Rényi order(s) left out of epsilon (no convergence)", dropped.count)


def l2_norm(arrays: Sequence[np.ndarray]) -> float:
    """The L2 norm of all the arrays flattened into one vector (computed in float64)."""
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


def capped_weight(num_examples: float, cap: float | None) -> float:
    """A client's weight in ``[0, 1]``: ``min(n / cap, 1)``, or 1 (uniform) without a cap."""
    if cap is None:
        return 1.0
    return min(float(num_examples) / cap, 1.0)


def fixed_denominator_mean(updates: Sequence[tuple[Arrays, float]], denominator: float) -> Arrays:
    """``sum_i c_i Delta_i / D`` for updates ``(Delta_i, c_i)`` (arXiv:1710.06963, Alg. 1).

    With weights in ``[0, 1]`` one client moves the sum by at most its clipped norm, so the
    sensitivity of the result is ``C / D`` (``D`` = ``denominator``, fixed before the round).
    """
    total = sum(w for _, w in updates)
    if not updates or total <= 0:
        return [np.zeros_like(a) for a in updates[0][0]] if updates else []
    mean = weighted_mean(updates)
    scale = total / denominator
    return [np.asarray(m * scale, dtype=m.dtype) for m in mean]


@lru_cache(maxsize=4096)
def _epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent
    from dp_accounting.rdp import RdpAccountant

    if rounds == 0:
        return 0.0
    event: Any = GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1.0:
        event = PoissonSampledDpEvent(sampling_rate, event)
    accountant = RdpAccountant(list(RDP_ORDERS))
    with _orders_left_out():
        accountant.compose(event, rounds)
    return float(accountant.get_epsilon(delta))


class PrivacyAccountant:
    """(epsilon, delta) of a run of Gaussian mechanisms, one per round, by RDP.

    Parameters
    ----------
    noise_multiplier : float
        ``z`` of every round's Gaussian mechanism (> 0).
    sampling_rate : float
        ``q``: each client takes part in a round independently with this probability
        (Poisson sampling, amplified); 1.0 for no amplification.
    target_delta : float
        The ``delta`` epsilon is reported at.
    """

    def __init__(self, noise_multiplier: float, sampling_rate: float, target_delta: float) -> None:
        self.noise_multiplier = float(noise_multiplier)
        self.sampling_rate = float(sampling_rate)
        self.target_delta = float(target_delta)
        self.rounds = 0

    def epsilon(self, rounds: int | None = None) -> float:
        """Epsilon at ``target_delta`` after ``rounds`` rounds (default: the rounds composed)."""
        rounds = self.rounds if rounds is None else rounds
        return _epsilon(self.noise_multiplier, self.sampling_rate, rounds, self.target_delta)

    def compose(self) -> None:
        """Account for one more round."""
        self.rounds += 1

    def affordable_rounds(self, max_epsilon: float, planned: int) -> int:
        """The most rounds (at most ``planned``) whose epsilon stays <= ``max_epsilon``."""
        lo, hi = self.rounds, planned  # epsilon grows with rounds: bisect
        if self.epsilon(lo) > max_epsilon:
            return lo
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.epsilon(mid) <= max_epsilon:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def state_dict(self) -> dict[str, float | int]:
        """The accountant's state as plain data (for checkpoints)."""
        return {
            "noise_multiplier": self.noise_multiplier,
            "sampling_rate": self.sampling_rate,
            "target_delta": self.target_delta,
            "rounds": self.rounds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state :meth:`state_dict` returned."""
        self.noise_multiplier = float(state["noise_multiplier"])
        self.sampling_rate = float(state["sampling_rate"])
        self.target_delta = float(state["target_delta"])
        self.rounds = int(state["rounds"])
