"""FedNova: normalized averaging for clients that run different numbers of local steps.

Wang et al., "Tackling the Objective Inconsistency Problem in Heterogeneous Federated
Optimization", NeurIPS 2020, arXiv:2007.07481. Clients with more data (or more epochs) take
more local steps; FedAvg then drifts towards their objective. FedNova divides each client's
update by its local steps ``tau_i`` and rescales the mean by ``tau_eff = sum p_i tau_i``
(:func:`fedflower.aggregation.normalized.normalized_average`). A client's steps are
``local_epochs x ceil(n_i / batch_size)`` from the round's train config and the example count
it reports (a straggler that ran fewer epochs is counted at the full budget).
No hyperparameter of its own: the paper's FedNova is FedAvg's configuration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from fedflower import keys
from fedflower.aggregation.normalized import normalized_average
from fedflower.server.checked import CheckedFedAvg


class FedNova(CheckedFedAvg):
    """FedAvg with updates normalized by each client's local steps (arXiv:2007.07481)."""

    _epochs: int = 1
    _batch_size: int = 32

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the round's local epochs and batch size: they give each client's steps."""
        self._epochs = int(config.get(keys.LOCAL_EPOCHS, 1))  # type: ignore[arg-type]
        self._batch_size = int(config.get(keys.BATCH_SIZE, 32))  # type: ignore[arg-type]
        return super().configure_train(server_round, arrays, config, grid)

    def local_steps(self, num_examples: float) -> float:
        """``tau_i``: local epochs times batches per epoch."""
        return float(self._epochs * max(1, math.ceil(num_examples / self._batch_size)))

    def combine(self, updates: list[tuple[list[np.ndarray], float]]) -> list[np.ndarray]:
        """FedNova's normalized average of the round's updates around the global model."""
        if self._reference is None:
            raise RuntimeError("FedNova.combine runs after configure_train (the global model)")
        steps = [self.local_steps(w) for _, w in updates]
        return normalized_average(self._reference, updates, steps)
