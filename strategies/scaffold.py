"""SCAFFOLD: control variates that correct each client's drift towards its own optimum.

Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning",
ICML 2020, arXiv:1910.06378. The server sends its control variate ``c`` with every train
task; each client corrects its local gradients by ``c - c_i`` and replies with its model and
the change of its own control variate ``c_i`` (client side, kept in ``Context.state``:
:mod:`fedflower.client.scaffold`); the server averages the models and moves ``c``
(:func:`fedflower.aggregation.control.controlled_step`). ``global_lr`` (``eta_g``) defaults
to 1, the paper's value in its experiments. Each train task and reply carries a second
model-sized array set: twice FedAvg's traffic, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from fedflower import keys
from fedflower.aggregation.control import controlled_step
from fedflower.checks import check_number
from fedflower.server.checked import CheckedFedAvg
from fedflower.wire import named_record


class Scaffold(CheckedFedAvg):
    """FedAvg with SCAFFOLD's control variates (arXiv:1910.06378, option II).

    Parameters
    ----------
    global_lr : float
        The server's step size ``eta_g`` (> 0).
    **options
        Flower's ``FedAvg`` options (client sampling).
    """

    drops_stragglers = False

    def __init__(self, global_lr: float = 1.0, **options: Any) -> None:
        check_number("strategy.global_lr", global_lr, minimum=0.0, min_open=True)
        super().__init__(**options)
        self.global_lr = float(global_lr)
        self.control: list[np.ndarray] | None = None
        self.num_clients = 1
        self._deltas: list[list[np.ndarray]] = []

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower's sampled train tasks, each carrying the control variate ``c``."""
        self.num_clients = max(1, len(list(grid.get_node_ids())))
        messages = list(super().configure_train(server_round, arrays, config, grid))
        reference = self._reference or arrays.to_numpy_ndarrays()
        c = self.control or [np.zeros_like(a) for a in reference]
        c = [a.astype(r.dtype) for a, r in zip(c, reference, strict=True)]
        for message in messages:
            message.content[keys.CONTROL] = named_record(list(arrays.keys()), c)
        return messages

    def accepted_updates(
        self, replies: Iterable[Message]
    ) -> list[tuple[Message, list[str], list[np.ndarray], float]]:
        """The well-formed updates; a reply without its control variate change is refused."""
        accepted = []
        for item in super().accepted_updates(replies):
            record = item[0].content.array_records.get(keys.CONTROL_DELTA)
            if record is None:
                self.rejected += 1
                continue
            accepted.append((item, record.to_numpy_ndarrays()))
        self._deltas = [delta for _, delta in accepted]
        return [item for item, _ in accepted]

    def combine(self, updates: list[tuple[list[np.ndarray], float]]) -> list[np.ndarray]:
        """The paper's server step from the participants' models and control changes."""
        if self._reference is None:
            raise RuntimeError("Scaffold.combine runs after configure_train (the global model)")
        models = [arrays for arrays, _ in updates]
        new, self.control = controlled_step(
            self._reference, models, self.control, self._deltas, self.global_lr, self.num_clients
        )
        return new

    def state_dict(self) -> dict[str, Any]:
        """The counters and ``c`` (for a checkpoint)."""
        return {**super().state_dict(), "control": self.control}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        control = state["control"]
        self.control = None if control is None else [np.asarray(a) for a in control]
