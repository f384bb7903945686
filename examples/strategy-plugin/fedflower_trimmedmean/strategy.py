"""Coordinate-wise trimmed mean of the clients' models.

Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
ICML 2018, arXiv:1803.01498. For every parameter the server drops the ``beta`` fraction of
largest and of smallest client values and averages the rest, so a few outlying (or malicious)
clients cannot drag the global model far.

The plugin reuses fedflower's ``CheckedFedAvg`` (client sampling, update checks, metric hooks)
and Flower's ``trim_mean``; only the aggregation is new.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean

from fedflower.strategy import CheckedFedAvg


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

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Trimmed mean of the well-formed updates (malformed ones are dropped with a warning)."""
        accepted = self.accepted_updates(replies)
        if not accepted:
            return None, None
        names = accepted[0][1]
        layers = zip(*(arrays for _, _, arrays, _ in accepted), strict=True)
        result = [
            np.asarray(trim_mean(np.stack(layer), self.beta)).astype(layer[0].dtype)
            for layer in layers
        ]
        metrics = self.train_metrics_aggr_fn(
            [reply.content for reply, *_ in accepted], self.weighted_by_key
        )
        return ArrayRecord({k: Array(a) for k, a in zip(names, result, strict=True)}), metrics
