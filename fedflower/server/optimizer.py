"""Strategies that put a server-side optimizer on top of checked, streamed averaging.

Flower's ``FedAvgM``/``FedAdam``/``FedYogi``/``FedAdagrad`` provide the constructor options
(``server_learning_rate``, ``server_momentum``, ``eta``, ``beta_1``, ``beta_2``, ``tau``), the
logged summary and the round plumbing; :class:`ServerOptStrategy` replaces only their
aggregation: :class:`~fedflower.server.checked.CheckedFedAvg` averages the accepted updates and a
pure-NumPy :class:`~fedflower.aggregation.ServerOptimizer` takes the step (Reddi et al. 2021,
"Adaptive Federated Optimization", arXiv:2003.00295). A plugin combines them as
``class FedAdam(ServerOptStrategy, flwr.serverapp.strategy.FedAdam)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from fedflower.aggregation import ServerOptimizer
from fedflower.errors import UpdateRejected
from fedflower.server.checked import CheckedFedAvg


class ServerOptStrategy(CheckedFedAvg):
    """Mean of the accepted client models, then one step of :meth:`make_optimizer`'s optimizer.

    The optimizer is created when the first round is configured (after the Flower base class
    has stored its options, so bad options fail before any training) and keeps its state
    (momentum, moments) across rounds.
    """

    _optimizer: ServerOptimizer | None = None

    def make_optimizer(self) -> ServerOptimizer:
        """Return the server optimizer built from this strategy's options."""
        raise NotImplementedError

    @property
    def optimizer(self) -> ServerOptimizer:
        """The server optimizer (created on first use)."""
        if self._optimizer is None:
            self._optimizer = self.make_optimizer()
        return self._optimizer

    def state_dict(self) -> dict[str, Any]:
        """Checked aggregation's counters and the server optimizer's moments."""
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Build (and so validate) the optimizer before the first round, then sample."""
        _ = self.optimizer
        return super().configure_train(server_round, arrays, config, grid)

    def combine(self, updates: list[tuple[list[np.ndarray], float]]) -> list[np.ndarray]:
        """One server-optimizer step from the global model towards the updates' mean."""
        if self._reference is None:
            raise UpdateRejected("no global model was sent this round")
        return self.optimizer.step(self._reference, super().combine(updates))
