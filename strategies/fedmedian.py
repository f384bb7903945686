"""FedMedian: the coordinate-wise median of the clients' models.

Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
ICML 2018, arXiv:1803.01498. Each coordinate of the global model is the (unweighted) median
of that coordinate over the accepted updates (Flower's ``aggregate_median``).
"""

import numpy as np
from flwr.server.strategy.aggregate import aggregate_median
from flwr.serverapp.strategy import FedMedian as FlowerFedMedian

from fedflower.server.robust import RobustAggregation, Update


class FedMedian(RobustAggregation, FlowerFedMedian):
    """Coordinate-wise median of the updates (Yin et al. 2018, arXiv:1803.01498)."""

    rule = "fedmedian"

    def robust_combine(self, updates: list[Update]) -> list[np.ndarray]:
        """The coordinate-wise median."""
        return aggregate_median([(arrays, int(weight)) for arrays, weight in updates])
