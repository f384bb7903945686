"""FedProx: FedAvg with a proximal term in every client's local objective.

Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020, arXiv:1812.06127.
The server sends ``proximal-mu`` with every training round (Flower's ``FedProx``) and each client
minimizes ``F_k(w) + mu/2 * ||w - w_global||^2`` (:mod:`fedflower.client.proximal`); the server
averages the results as FedAvg does. Stragglers' partial work is kept (the paper's setting).
"""

from typing import Any

from flwr.serverapp.strategy import FedProx as FlowerFedProx

from fedflower.checks import check_number
from fedflower.server.checked import CheckedFedAvg


class FedProx(FlowerFedProx, CheckedFedAvg):
    """FedAvg with the clients' proximal term mu/2 * ||w - w_global||^2 (arXiv:1812.06127)."""

    drops_stragglers = False
    """Keep the partial work of stragglers (FedAvg drops it), as in the FedProx paper."""

    def __init__(self, proximal_mu: float = 0.0, **options: Any) -> None:
        check_number("strategy.proximal_mu", proximal_mu, minimum=0.0)
        super().__init__(proximal_mu=proximal_mu, **options)
