"""FedAdam: Adaptive Federated Optimization with server-side Adam.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021, arXiv:2003.00295 (Algorithm 2).
Clients train as in FedAvg; the server averages their models and takes one Adam step on the
averaged update ``Delta_t`` with server learning rate ``eta`` and adaptivity ``tau``.
The options are those of Flower's ``FedAdam``;
the step is :class:`fedflower.aggregation.ServerAdam`.
"""

from flwr.serverapp.strategy import FedAdam as FlowerFedAdam

from fedflower.aggregation import ServerAdam, ServerOptimizer
from fedflower.server.optimizer import ServerOptStrategy


class FedAdam(ServerOptStrategy, FlowerFedAdam):
    """Server-side Adam on the averaged client update (Reddi et al. 2021, arXiv:2003.00295)."""

    def make_optimizer(self) -> ServerOptimizer:
        """Adam from Flower's ``eta``, ``beta_1``, ``beta_2`` and ``tau`` options."""
        return ServerAdam(self.eta, self.beta_1, self.beta_2, self.tau)
