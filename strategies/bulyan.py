"""Bulyan: Multi-Krum selection, then a coordinate-wise trimmed mean around the median.

El Mhamdi et al., "The Hidden Vulnerability of Distributed Learning in Byzantium", ICML 2018,
arXiv:1802.07927. With ``n`` accepted updates and ``f = num_malicious_nodes``: select
``theta = n - 2f`` updates by Multi-Krum, then average, coordinate by coordinate, the
``theta - 2f`` selected values closest to their median. Needs ``n >= 4f + 3``. Selection,
median and closest-value mean are Flower's (``Bulyan``'s helpers), unweighted as there.
"""

import numpy as np
from flwr.serverapp.strategy import Bulyan as FlowerBulyan
from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights

from fedflower.server.robust import RobustAggregation, Update, selection


class Bulyan(RobustAggregation, FlowerBulyan):
    """Multi-Krum selection + trimmed mean around the median (arXiv:1802.07927)."""

    rule = "bulyan"

    def required_updates(self) -> tuple[int, str]:
        """Bulyan's guarantee needs ``n >= 4f + 3``."""
        return 4 * self.num_malicious_nodes + 3, "4*num_malicious_nodes+3"

    def robust_combine(self, updates: list[Update]) -> list[np.ndarray]:
        """Mean of the ``theta - 2f`` values closest to the median of the selected updates."""
        f = self.num_malicious_nodes
        theta = len(updates) - 2 * f
        chosen = selection(updates, f, theta, self.selection_rule)
        selected = [arrays for arrays, _ in self.select(updates, chosen)]
        median = [np.median(layer, axis=0) for layer in zip(*selected, strict=True)]
        return aggregate_n_closest_weights(median, selected, theta - 2 * f)
