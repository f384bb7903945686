"""FedDyn's server update in pure NumPy.

Acar et al., "Federated Learning Based on Dynamic Regularization", ICLR 2021,
arXiv:2111.04263, Algorithm 1: with the round's participants ``P`` of ``m`` clients,

    h <- h - alpha * (1/m) * sum_{i in P} (theta_i - theta)
    theta <- (1/|P|) * sum_{i in P} theta_i - h / alpha

The mean over participants is unweighted, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dynamic_step(
    reference: Sequence[np.ndarray],
    client_models: Sequence[Sequence[np.ndarray]],
    h: Sequence[np.ndarray] | None,
    alpha: float,
    num_clients: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The new global model and server state ``h`` after one FedDyn round.

    Parameters
    ----------
    reference : sequence of ndarray
        The global model ``theta`` the clients started from.
    client_models : sequence of sequences of ndarray
        The participants' trained models ``theta_i``.
    h : sequence of ndarray, optional
        The server state (``None``: zeros, the first round).
    alpha : float
        FedDyn's regularization weight (> 0).
    num_clients : int
        ``m``, the number of clients in the federation.
    """
    new_theta, new_h = [], []
    for k, theta in enumerate(reference):
        base = theta.astype(np.float64)
        stacked = np.stack([np.asarray(c[k], dtype=np.float64) for c in client_models])
        hk = np.zeros_like(base) if h is None else np.asarray(h[k], dtype=np.float64)
        hk = hk - alpha * (stacked - base).sum(axis=0) / num_clients
        new_h.append(hk)
        new_theta.append((stacked.mean(axis=0) - hk / alpha).astype(theta.dtype))
    return new_theta, new_h
