"""Coordinate-wise trimmed mean of the clients' models.

Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
ICML 2018, arXiv:1803.01498. For every parameter the server drops the ``beta`` fraction of
largest and of smallest client values and averages the rest, so a few outlying (or malicious)
clients cannot drag the global model far.

The plugin reuses fedflower's ``CheckedFedAvg`` (client sampling, update checks, metric hooks)
and Flower's ``trim_mean``; only the aggregation is new.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean

from fedflower.server.checked import CheckedFedAvg


class TrimmedMean(CheckedFedAvg):
    """Coordinate-wise trimmed mean of the client models (Yin et al. 2018, arXiv:1803.01498).

    Parameters
    ----------
    beta : float
        Fraction cut from each end per coordinate, in [0, 0.5).
    **kwargs
        Flower ``FedAvg`` options (``fraction_train``, ``min_train_nodes``, ...).
    """

    def __init__(self, *, beta: float = 0.2, **kwargs: Any) -> None:
        if not 0.0 <= beta < 0.5:
            raise ValueError(f"beta must be in [0, 0.5), got {beta!r}")
        super().__init__(**kwargs)
        self.beta = beta

    def combine(self, updates: list[tuple[list[np.ndarray], float]]) -> list[np.ndarray]:
        """Coordinate-wise trimmed mean of the accepted models (their weights are not used)."""
        layers = zip(*(arrays for arrays, _ in updates), strict=True)
        return [
            np.asarray(trim_mean(np.stack(layer), self.beta)).astype(layer[0].dtype)
            for layer in layers
        ]
