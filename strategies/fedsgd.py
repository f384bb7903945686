"""FedSGD: clients return their update, the server takes a gradient step with it.

The server step on averaged client deltas: ``theta <- theta - eta * (1/N) * sum_i g_i``.
McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017, arXiv:1602.05629, call this baseline FedSGD. Each client replies with
``g_i = w_global - w_local`` instead of its weights: with one full-batch local SGD step at learning
rate ``lr``, ``g_i = lr * grad F_i(w_global)``. The server applies
``w <- w - server_learning_rate * mean_i(g_i)``, the mean weighted by examples (``weighted``) or
uniform (the plain ``1/N`` mean). With one local step and ``server_learning_rate=1`` this is
exactly FedAvg.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedflower import aggregation, keys
from fedflower.checks import check_number
from fedflower.errors import UpdateRejected
from fedflower.server.checked import CheckedFedAvg

FULL_BATCH = 2**31 - 1
"""Batch size sent for a full-batch step (larger than any client's data)."""

MetricsAggr = Callable[[list[RecordDict], str], MetricRecord]


class FedSGD(CheckedFedAvg):
    """FedSGD (server step on averaged client deltas): w <- w - eta * mean(g_i), g_i = w - w_i.

    Parameters
    ----------
    server_learning_rate : float
        The server's step size ``eta`` (> 0).
    weighted : bool
        Weight each client's update by its number of examples (as FedAvg); ``False`` takes the
        plain mean ``(1/N) sum_i g_i``.
    full_batch : bool
        Ask every client for exactly one full-batch step (one local epoch, batch = all its data),
        so ``g_i`` is ``lr`` times its gradient. ``False`` keeps the client settings (then
        ``g_i`` is a multi-step model delta).
    fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes, min_available_nodes
        Client sampling, as in Flower's ``FedAvg``.
    train_metrics_aggr_fn, evaluate_metrics_aggr_fn : callable, optional
        Metric aggregation hooks, as in Flower's ``FedAvg``.
    """

    def __init__(
        self,
        *,
        server_learning_rate: float = 1.0,
        weighted: bool = True,
        full_batch: bool = True,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        train_metrics_aggr_fn: MetricsAggr | None = None,
        evaluate_metrics_aggr_fn: MetricsAggr | None = None,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self.server_learning_rate = float(
            check_number("server_learning_rate", server_learning_rate, minimum=0, min_open=True)
        )
        self.weighted = bool(weighted)
        self.full_batch = bool(full_batch)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask the sampled clients for their update (and one full-batch step if configured)."""
        config = ConfigRecord({**config, keys.RETURN_UPDATE: True})
        if self.full_batch:
            config[keys.LOCAL_EPOCHS] = 1
            config[keys.BATCH_SIZE] = FULL_BATCH
        return super().configure_train(server_round, arrays, config, grid)

    def combine(self, updates: list[tuple[list[np.ndarray], float]]) -> list[np.ndarray]:
        """``w - eta * mean(g)`` over the accepted updates ``g`` (1/N mean unless weighted)."""
        if self._reference is None:
            raise UpdateRejected("no global model was sent this round")
        mean_g = aggregation.weighted_mean((g, w if self.weighted else 1.0) for g, w in updates)
        return aggregation.sgd_step(self._reference, mean_g, self.server_learning_rate)
