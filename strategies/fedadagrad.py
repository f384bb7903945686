"""FedAdagrad: Adaptive Federated Optimization with server-side Adagrad.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021, arXiv:2003.00295 (Algorithm 2).
Clients train as in FedAvg; the server averages their models and takes one Adagrad step on the
averaged update ``Delta_t`` with server learning rate ``eta`` and adaptivity ``tau``.
The options are those of Flower's ``FedAdagrad``;
the step is :class:`fedflower.aggregation.ServerAdagrad`.
"""

from flwr.serverapp.strategy import FedAdagrad as FlowerFedAdagrad

from fedflower.aggregation import ServerAdagrad, ServerOptimizer
from fedflower.server.optimizer import ServerOptStrategy


class FedAdagrad(ServerOptStrategy, FlowerFedAdagrad):
    """Server-side Adagrad on the averaged client update (Reddi et al. 2021, arXiv:2003.00295)."""

    def make_optimizer(self) -> ServerOptimizer:
        """Adagrad from Flower's ``eta``, ``beta_1``, ``beta_2`` and ``tau`` options."""
        return ServerAdagrad(self.eta, self.beta_1, self.beta_2, self.tau)
