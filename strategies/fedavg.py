"""FedAvg: Federated Averaging.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017, arXiv:1602.05629. Each round a fraction of clients trains locally from the global
model; the server replaces the global model by the mean of their weights, weighted by their
number of training examples.
"""

from fedflower.server.checked import CheckedFedAvg


class FedAvg(CheckedFedAvg):
    """Federated Averaging: example-weighted mean of the clients' weights (arXiv:1602.05629)."""
