"""Wisconsin diagnostic breast-cancer data shipped with scikit-learn (569 patients, 30 features)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fedflower.data.source import TabularSource


def load(test_fraction: float = 0.2, seed: int = 0) -> TabularSource:
    """Load the data, hold out a stratified test split and standardize.

    The scaler is fitted on the training pool only, so no statistic of the test split leaks
    into training. The training pool is shuffled, so contiguous partitions are IID.

    Parameters
    ----------
    test_fraction : float
        Fraction of patients held out as the central test set.
    seed : int
        Seed of the split.
    """
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed, shuffle=True
    )
    scaler = StandardScaler().fit(x_train)
    return TabularSource(
        name="breast_cancer",
        x=scaler.transform(x_train).astype(np.float32),
        y=y_train.astype(np.int64),
        x_test=scaler.transform(x_test).astype(np.float32),
        y_test=y_test.astype(np.int64),
        num_classes=2,
    )
