"""Multi-Krum: the example-weighted mean of the ``m`` updates with the lowest Krum scores.

Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent",
NeurIPS 2017, arXiv:1703.02757 (Multi-Krum, section 4). ``m = num_nodes_to_select``;
``m = 1`` is Krum. Needs ``n >= 2f + 3`` accepted updates. The selection is Flower's.
"""

from flwr.serverapp.strategy import MultiKrum as FlowerMultiKrum

from fedflower.server.robust import KrumRule


class MultiKrum(KrumRule, FlowerMultiKrum):
    """Mean of the m lowest-Krum-score updates (Blanchard et al. 2017, arXiv:1703.02757)."""

    rule = "multikrum"
