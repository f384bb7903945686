"""FedYogi: Adaptive Federated Optimization with server-side Yogi.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021, arXiv:2003.00295 (Algorithm 2).
Clients train as in FedAvg; the server averages their models and takes one Yogi step on the
averaged update ``Delta_t`` with server learning rate ``eta`` and adaptivity ``tau``.
The options are those of Flower's ``FedYogi``;
the step is :class:`fedflower.aggregation.ServerYogi`.
"""

from flwr.serverapp.strategy import FedYogi as FlowerFedYogi

from fedflower.aggregation import ServerOptimizer, ServerYogi
from fedflower.server.optimizer import ServerOptStrategy


class FedYogi(ServerOptStrategy, FlowerFedYogi):
    """Server-side Yogi on the averaged client update (Reddi et al. 2021, arXiv:2003.00295)."""

    def make_optimizer(self) -> ServerOptimizer:
        """Yogi from Flower's ``eta``, ``beta_1``, ``beta_2`` and ``tau`` options."""
        return ServerYogi(self.eta, self.beta_1, self.beta_2, self.tau)
