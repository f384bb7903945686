"""SCAFFOLD's server update in pure NumPy.

Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning",
ICML 2020, arXiv:1910.06378, Algorithm 1: with the round's participants ``S`` of ``N``
clients, their models ``y_i`` and control variate changes ``dc_i``,

    x <- x + eta_g * (1/|S|) * sum_{i in S} (y_i - x)
    c <- c + (1/N) * sum_{i in S} dc_i

The means are unweighted, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def controlled_step(
    reference: Sequence[np.ndarray],
    client_models: Sequence[Sequence[np.ndarray]],
    control: Sequence[np.ndarray] | None,
    control_deltas: Sequence[Sequence[np.ndarray]],
    global_lr: float,
    num_clients: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The new global model ``x`` and server control variate ``c`` after one SCAFFOLD round.

    Parameters
    ----------
    reference : sequence of ndarray
        The global model ``x`` the clients started from.
    client_models : sequence of sequences of ndarray
        The participants' trained models ``y_i``.
    control : sequence of ndarray, optional
        The server's control variate ``c`` (``None``: zeros, the first round).
    control_deltas : sequence of sequences of ndarray
        The participants' ``c_i+ - c_i``.
    global_lr : float
        ``eta_g``, the server's step size.
    num_clients : int
        ``N``, the number of clients in the federation.
    """
    new_x, new_c = [], []
    for k, x in enumerate(reference):
        base = x.astype(np.float64)
        models = np.stack([np.asarray(m[k], dtype=np.float64) for m in client_models])
        deltas = np.stack([np.asarray(d[k], dtype=np.float64) for d in control_deltas])
        ck = np.zeros_like(base) if control is None else np.asarray(control[k], dtype=np.float64)
        new_x.append((base + global_lr * (models - base).mean(axis=0)).astype(x.dtype))
        new_c.append(ck + deltas.sum(axis=0) / num_clients)
    return new_x, new_c
