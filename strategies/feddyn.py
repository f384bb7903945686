"""FedDyn: federated learning with dynamic regularization.

Acar et al., "Federated Learning Based on Dynamic Regularization", ICLR 2021,
arXiv:2111.04263. Each client adds a linear and a quadratic term to its objective so that its
local optimum agrees with the global one (client side: :mod:`fedflower.client.dynamic`); the
server keeps a running correction ``h`` and moves the global model by it
(:func:`fedflower.aggregation.dynamic.dynamic_step`). ``alpha`` defaults to 0.01, the value
the paper reports for most of its experiments (it searches {0.1, 0.01, 0.001}).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from fedflower import keys
from fedflower.aggregation.dynamic import dynamic_step
from fedflower.checks import check_number
from fedflower.server.checked import CheckedFedAvg


class FedDyn(CheckedFedAvg):
    """FedAvg with FedDyn's dynamic regularization (arXiv:2111.04263).

    Parameters
    ----------
    alpha : float
        The regularization weight (> 0).
    **options
        Flower's ``FedAvg`` options (client sampling).
    """

    drops_stragglers = False

    def __init__(self, alpha: float = 0.01, **options: Any) -> None:
        check_number("strategy.alpha", alpha, minimum=0.0, min_open=True)
        super().__init__(**options)
        self.alpha = float(alpha)
        self.h: list[np.ndarray] | None = None
        self.num_clients = 1

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send ``alpha`` (the proximal weight and FedDyn's flag); count the federation."""
        self.num_clients = max(1, len(list(grid.get_node_ids())))
        config = ConfigRecord(
            {**config, keys.PROXIMAL_MU: self.alpha, keys.FEDDYN_ALPHA: self.alpha}
        )
        return super().configure_train(server_round, arrays, config, grid)

    def combine(self, updates: list[tuple[list[np.ndarray], float]]) -> list[np.ndarray]:
        """The paper's server step from the participants' models."""
        if self._reference is None:
            raise RuntimeError("FedDyn.combine runs after configure_train (the global model)")
        models = [arrays for arrays, _ in updates]
        new, self.h = dynamic_step(self._reference, models, self.h, self.alpha, self.num_clients)
        return new

    def state_dict(self) -> dict[str, Any]:
        """The counters and ``h`` (for a checkpoint)."""
        return {**super().state_dict(), "h": self.h}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        self.h = None if state["h"] is None else [np.asarray(a) for a in state["h"]]
