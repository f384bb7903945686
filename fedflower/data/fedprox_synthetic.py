"""Synthetic(alpha, beta): the federated benchmark data of the FedProx paper.

Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020, arXiv:1812.06127,
section 5.1, after Shamir et al. 2014 (arXiv:1312.7853); the generator follows the paper's code
(``data/synthetic_1_1/generate_synthetic.py`` of github.com/litian96/FedProx). For device ``k``:

* its size is ``int(lognormal(4, 2)) + 50`` examples (a few devices hold most of the data);
* ``u_k ~ N(0, alpha)`` and ``B_k ~ N(0, beta)``; its model is ``W_k ~ N(u_k, 1)`` (60 x 10) and
  ``b_k ~ N(u_k, 1)`` (10), so ``alpha`` controls how much the local models differ;
* its features are ``x ~ N(v_k, Sigma)`` with ``v_k ~ N(B_k, 1)`` and ``Sigma`` diagonal,
  ``Sigma_jj = j^-1.2``, so ``beta`` controls how much the local data differ;
* its labels are ``y = argmax(softmax(x W_k + b_k))``;
* its examples are shuffled and split 90 % training / 10 % test.

``iid=True`` gives the paper's Synthetic-IID: one shared ``W, b ~ N(0, 1)`` and ``x ~ N(0, Sigma)``
on every device. The test set is the devices' 10 % splits pooled; each device is one natural
group (one client with ``partition=natural`` or ``auto``).
"""

from __future__ import annotations

import numpy as np

from fedflower.checks import check_number
from fedflower.data.source import TabularSource
from fedflower.errors import DataError


def device_sizes(rng: np.random.Generator, num_devices: int) -> np.ndarray:
    """Examples per device: ``int(lognormal(4, 2)) + 50``, as in the paper's generator."""
    return rng.lognormal(4.0, 2.0, num_devices).astype(np.int64) + 50


def load(
    alpha: float = 1.0,
    beta: float = 1.0,
    num_devices: int = 30,
    num_features: int = 60,
    num_classes: int = 10,
    train_fraction: float = 0.9,
    iid: bool = False,
    seed: int = 0,
) -> TabularSource:
    """Generate Synthetic(alpha, beta) with one natural group per device.

    Parameters
    ----------
    alpha : float
        Standard deviation of the devices' model means (model heterogeneity, >= 0).
    beta : float
        Standard deviation of the devices' feature means (data heterogeneity, >= 0).
    num_devices : int
        Number of devices (the paper: 30).
    num_features, num_classes : int
        Dimensions of the data (the paper: 60 features, 10 classes).
    train_fraction : float
        Share of each device's examples used for training; the rest joins the test set.
    iid : bool
        Generate Synthetic-IID instead (``alpha`` and ``beta`` are then ignored).
    seed : int
        Seed of the generator.

    Returns
    -------
    TabularSource
        Training pool with ``groups`` = device id, and the pooled test splits.
    """
    for key, value, least in (("num_devices", num_devices, 1), ("num_features", num_features, 1)):
        check_number(f"dataset.{key}", value, minimum=least, integer=True, error=DataError)
    check_number("dataset.num_classes", num_classes, minimum=2, integer=True, error=DataError)
    check_number("dataset.alpha", alpha, minimum=0, error=DataError)
    check_number("dataset.beta", beta, minimum=0, error=DataError)
    check_number(
        "dataset.train_fraction",
        train_fraction,
        minimum=0,
        maximum=1,
        min_open=True,
        max_open=True,
        error=DataError,
    )
    rng = np.random.default_rng(seed)
    sizes = device_sizes(rng, num_devices)
    sigma = np.power(np.arange(1, num_features + 1, dtype=np.float64), -1.2)
    if iid:
        mean_w = np.zeros(num_devices)
        mean_x = np.zeros((num_devices, num_features))
        shared = (
            rng.normal(0.0, 1.0, (num_features, num_classes)),
            rng.normal(0.0, 1.0, num_classes),
        )
    else:
        mean_w = rng.normal(0.0, alpha, num_devices)
        shift = rng.normal(0.0, beta, num_devices)
        mean_x = np.stack([rng.normal(shift[k], 1.0, num_features) for k in range(num_devices)])
    xs, ys, gs, xt, yt = [], [], [], [], []
    for k in range(num_devices):
        if iid:
            w, b = shared
        else:
            w = rng.normal(mean_w[k], 1.0, (num_features, num_classes))
            b = rng.normal(mean_w[k], 1.0, num_classes)
        x = mean_x[k] + np.sqrt(sigma) * rng.standard_normal((sizes[k], num_features))
        y = np.argmax(x @ w + b, axis=1)  # argmax of the softmax is argmax of the logits
        order = rng.permutation(sizes[k])
        x, y = x[order].astype(np.float32), y[order].astype(np.int64)
        n_train = int(train_fraction * sizes[k])
        xs.append(x[:n_train])
        ys.append(y[:n_train])
        gs.append(np.full(n_train, k, dtype=np.int64))
        xt.append(x[n_train:])
        yt.append(y[n_train:])
    name = "fedprox_synthetic_iid" if iid else f"fedprox_synthetic({alpha:g},{beta:g})"
    return TabularSource(
        name=name,
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        x_test=np.concatenate(xt),
        y_test=np.concatenate(yt),
        num_classes=num_classes,
        groups=np.concatenate(gs),
    )
