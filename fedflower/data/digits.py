"""Handwritten digits shipped with scikit-learn: 1,797 grey 8x8 images of the digits 0-9.

The UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin & Kaynak 1998), as
``sklearn.datasets.load_digits`` ships it: no download. Pixels are 0-16 counts, scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fedflower.checks import check_number
from fedflower.data.source import TabularSource
from fedflower.errors import DataError

MAX_PIXEL = 16.0
"""Largest pixel value of the 8x8 images (counts of set pixels in 4x4 blocks)."""


def load(test_fraction: float = 0.2, seed: int = 0) -> TabularSource:
    """Load the images as ``(n, 8, 8, 1)`` float32 in [0, 1] with a stratified central test split.

    Parameters
    ----------
    test_fraction : float
        Fraction of the images held out as the central test set.
    seed : int
        Seed of the split (the training pool is shuffled, so contiguous partitions are IID).
    """
    check_number(
        "dataset.test_fraction",
        test_fraction,
        minimum=0,
        maximum=1,
        min_open=True,
        max_open=True,
        error=DataError,
    )
    images, labels = load_digits(return_X_y=True)
    x = (images.reshape(-1, 8, 8, 1) / MAX_PIXEL).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, labels, test_size=test_fraction, stratify=labels, random_state=seed, shuffle=True
    )
    return TabularSource(
        name="digits",
        x=x_train,
        y=y_train.astype(np.int64),
        x_test=x_test,
        y_test=y_test.astype(np.int64),
        num_classes=10,
    )
