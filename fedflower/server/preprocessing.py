"""A table's preprocessing fitted on the clients' statistics, then applied to every client's rows.

The clients summarise their own training rows (:func:`client_statistics`: counts, sums, sums
of squares, category counts); the summaries are merged and fitted
(:mod:`fedflower.aggregation.preprocessing`), and the fitted preprocessing turns each
client's raw rows and the central test set into the model's features. The saved model
carries the same steps as Keras layers in front (:mod:`fedflower.model_inputs`), so it
takes raw rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from fedflower.aggregation import preprocessing
from fedflower.data.partition import FederatedData
from fedflower.data.source import ClientData, Columns, TabularSource
from fedflower.data.tables import split_raw

log = logging.getLogger(__name__)


def client_statistics(columns: Columns, data: ClientData) -> preprocessing.Statistics:
    """What one client shares: the sufficient statistics of its training rows, no row."""
    return preprocessing.statistics(*split_raw(columns, data.x_train))


def federated_fit(columns: Columns, clients: Sequence[ClientData]) -> preprocessing.Fitted:
    """The preprocessing fitted from every client's statistics, merged."""
    parts = [client_statistics(columns, data) for data in clients]
    fitted = preprocessing.fit(
        preprocessing.merge(parts), columns.normalize, columns.missing_indicator
    )
    log.info(
        "preprocessing fitted from %d clients' statistics (%d bytes each at most, no rows): "
        "%d numeric, %d categorical columns -> %d features",
        len(parts),
        max(p.nbytes() for p in parts),
        len(columns.numeric),
        len(columns.categorical),
        fitted.width,
    )
    return fitted


def features(columns: Columns, fitted: preprocessing.Fitted, x: np.ndarray) -> np.ndarray:
    """Raw-encoded rows as the model's features."""
    return preprocessing.transform(fitted, *split_raw(columns, x))


def prepare(source: TabularSource, fed: FederatedData) -> TabularSource:
    """Fit the table's preprocessing on ``fed``'s clients and apply it to every client.

    Returns the dataset with its test set (and training pool) as features; ``fed``'s
    clients then hold features too. A dataset without table columns is returned as is.
    """
    columns = source.columns
    if columns is None or source.preprocessing is not None:
        return source
    fitted = federated_fit(columns, [fed.client(c) for c in range(fed.num_clients)])

    def transform(x: np.ndarray) -> np.ndarray:
        return features(columns, fitted, x)

    prepared = replace(
        source,
        x=transform(source.x),
        x_test=transform(source.x_test),
        preprocessing=fitted.as_dict(),
    )
    fed.prepare(prepared, transform)
    return prepared
