"""FedTrimmedAvg: the coordinate-wise trimmed mean of the clients' models.

Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates",
ICML 2018, arXiv:1803.01498. For each coordinate the ``beta`` fraction of largest and of
smallest values over the accepted updates is cut and the rest averaged (unweighted, Flower's
``trim_mean``); ``beta`` must be in ``[0, 0.5)``.
"""

from typing import Any

import numpy as np
from flwr.serverapp.strategy import FedTrimmedAvg as FlowerFedTrimmedAvg
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean

from fedflower.checks import check_number
from fedflower.server.robust import RobustAggregation, Update


class FedTrimmedAvg(RobustAggregation, FlowerFedTrimmedAvg):
    """Coordinate-wise beta-trimmed mean of the updates (Yin et al. 2018, arXiv:1803.01498)."""

    rule = "fedtrimmedavg"

    def __init__(self, beta: float = 0.2, **options: Any) -> None:
        check_number("strategy.beta", beta, minimum=0.0, maximum=0.5, max_open=True)
        super().__init__(beta=beta, **options)

    def robust_combine(self, updates: list[Update]) -> list[np.ndarray]:
        """The coordinate-wise trimmed mean."""
        layers = zip(*(arrays for arrays, _ in updates), strict=True)
        return [np.asarray(trim_mean(np.stack(layer), self.beta)) for layer in layers]
