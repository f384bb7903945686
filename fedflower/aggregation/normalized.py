"""FedNova's normalized averaging in pure NumPy.

Wang, Liu, Liang, Joshi and Poor, "Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization", NeurIPS 2020, arXiv:2007.07481, eq. (6)-(7). Client
``i`` ran ``tau_i`` local steps from the global model ``x``; plain averaging weights each
client's progress by its number of steps and so optimizes a surrogate objective. FedNova
normalizes each update by its steps and rescales by the effective number of steps:

    d_i = (x - x_i) / tau_i,   tau_eff = sum_i p_i tau_i,   x_new = x - tau_eff * sum_i p_i d_i

with ``p_i = n_i / sum_j n_j``. This is the paper's vanilla-SGD form (``a_i = [1, ..., 1]``,
``||a_i||_1 = tau_i``); with equal ``tau_i`` it equals FedAvg.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalized_average(
    reference: Sequence[np.ndarray],
    updates: Sequence[tuple[Sequence[np.ndarray], float]],
    steps: Sequence[float],
) -> list[np.ndarray]:
    """FedNova's new global model from the clients' weights, data sizes and local steps.

    Parameters
    ----------
    reference : sequence of ndarray
        The global model ``x`` the clients started from.
    updates : sequence of (arrays, weight)
        Each client's new weights ``x_i`` and its number of examples ``n_i``.
    steps : sequence of float
        Each client's number of local steps ``tau_i`` (> 0).
    """
    weights = np.array([w for _, w in updates], dtype=np.float64)
    tau = np.asarray(steps, dtype=np.float64)
    if weights.sum() <= 0 or np.any(tau <= 0):
        raise ValueError("FedNova needs positive example counts and local steps")
    p = weights / weights.sum()
    tau_eff = float(p @ tau)
    out = []
    for k, x in enumerate(reference):
        direction = sum(
            p[i] * (x.astype(np.float64) - np.asarray(arrays[k], np.float64)) / tau[i]
            for i, (arrays, _) in enumerate(updates)
        )
        out.append((x - tau_eff * direction).astype(x.dtype))
    return out
