"""Krum: the one update closest to its n - f - 2 nearest neighbours.

Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent",
NeurIPS 2017, arXiv:1703.02757. With ``f = num_malicious_nodes`` the global model becomes the
update with the lowest sum of squared distances to its ``n - f - 2`` nearest others; it needs
``n >= 2f + 3`` accepted updates. The selection is Flower's (``select_multikrum``).
"""

from flwr.serverapp.strategy import Krum as FlowerKrum

from fedflower.server.robust import KrumRule


class Krum(KrumRule, FlowerKrum):
    """The single update with the lowest Krum score (Blanchard et al. 2017, arXiv:1703.02757)."""

    rule = "krum"
