"""NumPy arrays as a dataset: :func:`from_arrays` for ``fedflower.run(data=...)``.

The arrays are checked and labelled exactly as the rows of a user's file
(:mod:`fedflower.data.files`): integer, text or one-hot labels, finite numeric features, a
client id per row for a natural split, a seeded held-out test set when none is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedflower.data import files
from fedflower.data.source import TabularSource
from fedflower.errors import DataError

NAME = "arrays"


def _held_out_split(
    x: np.ndarray, y: np.ndarray, clients: np.ndarray | None, test_fraction: float, seed: int
) -> tuple[Any, ...]:
    """``(x, y, clients, x_test, y_test)`` with ``test_fraction`` of the rows held out."""
    train, test = files.held_out(len(y), test_fraction, seed)
    kept = None if clients is None else clients[train]
    return x[train], y[train], kept, x[test], y[test]


def from_arrays(
    x: Any,
    y: Any,
    clients: Any = None,
    x_test: Any = None,
    y_test: Any = None,
    test_fraction: float = 0.2,
    standardize: bool = False,
    seed: int = 0,
    name: str = NAME,
) -> TabularSource:
    """A dataset from arrays in memory, for ``fedflower.run(data=...)``.

    Parameters
    ----------
    x, y : array_like
        Training rows (numbers, shape ``(n, *input_shape)``) and their labels: integers
        ``0..k-1``, class names (numbered in sorted order) or one-hot rows.
    clients : array_like, optional
        The client (site, hospital, device) of each training row: one client per distinct value
        (``partition=auto``). Without it the rows are split by ``partition`` (IID by default).
    x_test, y_test : array_like, optional
        The central test set no client sees; without them ``test_fraction`` of the rows is
        held out (seeded by ``seed``).
    test_fraction : float
        Share of rows held out when no test set is given.
    standardize : bool
        Scale every feature with the training rows' mean and standard deviation.
    seed : int
        Seed of the held-out split.
    name : str
        The dataset's name in messages and results.

    Returns
    -------
    TabularSource
        The checked dataset.

    Raises
    ------
    DataError
        Rows and labels differ in number, features are not finite numbers, labels are not
        classes, or only one of ``x_test`` and ``y_test`` is given.
    """
    where = Path(name)
    x, y = np.asarray(x), np.asarray(y)
    groups = None if clients is None else np.asarray(clients)
    if len(x) != len(y):
        raise DataError(
            f"{name}: x has {len(x)} rows but y {len(y)} labels; give one label per row"
        )
    if groups is not None and len(groups) != len(y):
        raise DataError(f"{name}: clients must give one id per row, got {len(groups)} for {len(y)}")
    if (x_test is None) != (y_test is None):
        raise DataError(f"{name}: give x_test and y_test together (or neither)")
    if x_test is None:
        x, y, groups, x_test, y_test = _held_out_split(x, y, groups, test_fraction, seed)
    names = files.class_names(y, np.asarray(y_test))
    labels = files.label_codes(where, y, "train", names)
    labels_test = files.label_codes(where, np.asarray(y_test), "test", names)
    feats = files.features_checked(where, x, "train", len(labels))
    feats_test = files.features_checked(where, np.asarray(x_test), "test", len(labels_test))
    if standardize:
        feats, feats_test = files.standardize(feats, feats_test)
    sites, codes = (None, None) if groups is None else files.group_codes(groups)
    return TabularSource(
        name=name,
        x=feats,
        y=labels,
        x_test=feats_test,
        y_test=labels_test,
        num_classes=files.num_classes(labels, labels_test, y, names),
        groups=codes,
        group_names=sites,
    )


def from_memory(key: str) -> TabularSource:
    """The dataset kept for ``fedflower.run(data=...)`` under ``key`` (``dataset=memory``)."""
    from fedflower import memory

    source = memory.get(key, "dataset.key")
    if not isinstance(source, TabularSource):
        raise DataError(
            f"dataset.key must name data made by fedflower.data.from_arrays, got "
            f"{type(source).__name__}"
        )
    return source
