"""FedAvgM: Federated Averaging with server momentum.

Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated
Visual Classification", 2019, arXiv:1909.06335. The server treats the change of the averaged
model as a pseudo-gradient and applies SGD with heavy-ball momentum to it. With
``server_momentum=0`` and ``server_learning_rate=1`` it is FedAvg.
"""

from flwr.serverapp.strategy import FedAvgM as FlowerFedAvgM

from fedflower.aggregation import ServerOptimizer, ServerSGD
from fedflower.server.optimizer import ServerOptStrategy


class FedAvgM(ServerOptStrategy, FlowerFedAvgM):
    """FedAvg with server momentum on the averaged update (arXiv:1909.06335)."""

    def make_optimizer(self) -> ServerOptimizer:
        """SGD with momentum, from Flower's ``server_learning_rate`` and ``server_momentum``."""
        return ServerSGD(self.server_learning_rate, self.server_momentum)
