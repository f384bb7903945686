"""Preprocessing fitted from the clients' sufficient statistics, not from pooled rows.

Each client summarises its training rows once: per numeric column the count of filled cells,
their sum and sum of squares and the count of empty cells; per categorical column the count of
each value. Counts and sums add up, so the merged summary is the one of the pooled rows while
no row leaves its client (the "federated analytics" pattern of Ramage & Mazzocchi 2020,
"Federated Analytics: Collaborative Data Science without Data Collection"). From it come the
mean and variance that standardise a numeric column (and fill its empty cells), and the
vocabulary and most frequent value of a categorical column (one-hot encoding; an empty or
unknown value counts as the most frequent).

:func:`transform` applies the fitted preprocessing to raw rows in NumPy; the saved model
carries the same steps as Keras layers (:mod:`fedflower.model_inputs`), so both agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Statistics:
    """The sufficient statistics of one client's rows (or of several, merged).

    Parameters
    ----------
    rows : int
        Number of rows summarised.
    count, total, squares, empty : ndarray
        Per numeric column: filled cells, their sum, their sum of squares, empty cells.
    categories : list of dict
        Per categorical column: the count of each value (empty cells not counted).
    """

    rows: int
    count: np.ndarray
    total: np.ndarray
    squares: np.ndarray
    empty: np.ndarray
    categories: list[dict[str, int]] = field(default_factory=list)

    def nbytes(self) -> int:
        """Size of the statistics as numbers (8 bytes each) plus the category names."""
        numbers = 4 * self.count.size + 1 + sum(len(c) for c in self.categories)
        return 8 * numbers + sum(len(k.encode()) for c in self.categories for k in c)


def statistics(numeric: np.ndarray, categorical: Sequence[np.ndarray]) -> Statistics:
    """Summarise rows: numeric (n, k) floats (NaN: empty), categorical text (``""``: empty)."""
    numeric = np.asarray(numeric, dtype=np.float64).reshape(len(numeric), -1)
    filled = ~np.isnan(numeric)
    values = np.where(filled, numeric, 0.0)
    counts = [Counter(str(v) for v in column if str(v)) for column in categorical]
    return Statistics(
        rows=len(numeric),
        count=filled.sum(axis=0).astype(np.float64),
        total=values.sum(axis=0),
        squares=np.square(values).sum(axis=0),
        empty=(~filled).sum(axis=0).astype(np.float64),
        categories=[dict(c) for c in counts],
    )


def merge(parts: Sequence[Statistics]) -> Statistics:
    """The statistics of all clients' rows together: counts and sums add up."""
    categories: list[Counter[str]] = [Counter() for _ in parts[0].categories]
    for part in parts:
        for merged, counts in zip(categories, part.categories, strict=True):
            merged.update(counts)
    return Statistics(
        rows=sum(p.rows for p in parts),
        count=np.sum([p.count for p in parts], axis=0),
        total=np.sum([p.total for p in parts], axis=0),
        squares=np.sum([p.squares for p in parts], axis=0),
        empty=np.sum([p.empty for p in parts], axis=0),
        categories=[dict(c) for c in categories],
    )


@dataclass(frozen=True)
class Fitted:
    """Preprocessing of raw rows: fill, standardise, flag empty cells, one-hot encode.

    Parameters
    ----------
    mean, variance : ndarray
        Per numeric column; an empty cell is filled with the mean, then
        ``(x - mean) / sqrt(variance)`` (variance 1 for a constant column, or without
        standardisation, where the mean is then 0 after filling).
    fill : ndarray
        The value an empty numeric cell takes (the column's mean).
    indicators : tuple of int
        Numeric columns that get a 0/1 "was empty" feature.
    vocabularies : tuple of tuple of str
        Per categorical column, the values seen on the clients (sorted).
    modes : tuple of int
        Per categorical column, the index of its most frequent value.
    """

    mean: np.ndarray
    variance: np.ndarray
    fill: np.ndarray
    indicators: tuple[int, ...] = ()
    vocabularies: tuple[tuple[str, ...], ...] = ()
    modes: tuple[int, ...] = ()

    @property
    def width(self) -> int:
        """Number of features the model reads after preprocessing."""
        return len(self.mean) + len(self.indicators) + sum(len(v) for v in self.vocabularies)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored with the model)."""
        return {
            "mean": self.mean.tolist(),
            "variance": self.variance.tolist(),
            "fill": self.fill.tolist(),
            "indicators": list(self.indicators),
            "vocabularies": [list(v) for v in self.vocabularies],
            "modes": list(self.modes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fitted:
        """The inverse of :meth:`as_dict`."""
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            variance=np.asarray(data["variance"], dtype=np.float64),
            fill=np.asarray(data["fill"], dtype=np.float64),
            indicators=tuple(int(i) for i in data["indicators"]),
            vocabularies=tuple(tuple(v) for v in data["vocabularies"]),
            modes=tuple(int(m) for m in data["modes"]),
        )


def fit(stats: Statistics, normalize: bool = True, missing_indicator: bool = False) -> Fitted:
    """The preprocessing the merged statistics call for.

    A column without a filled cell on any client is filled with 0.
    """
    count = np.maximum(stats.count, 1.0)
    mean = stats.total / count
    variance = np.maximum(stats.squares / count - np.square(mean), 0.0)
    variance[variance <= 1e-12] = 1.0
    vocabularies = tuple(tuple(sorted(c)) for c in stats.categories)
    modes = tuple(_most_frequent(v, c) for v, c in zip(vocabularies, stats.categories, strict=True))
    indicators = tuple(int(i) for i in np.flatnonzero(stats.empty)) if missing_indicator else ()
    return Fitted(
        mean=mean if normalize else np.zeros_like(mean),
        variance=variance if normalize else np.ones_like(variance),
        fill=mean,
        indicators=indicators,
        vocabularies=vocabularies,
        modes=modes,
    )


def _most_frequent(vocabulary: Sequence[str], counts: dict[str, int]) -> int:
    """Index of the most frequent value (the first in sorted order on a tie)."""
    best = max(counts[v] for v in vocabulary) if vocabulary else 0
    return next((i for i, v in enumerate(vocabulary) if counts[v] == best), 0)


def one_hot(values: np.ndarray, vocabulary: Sequence[str], mode: int) -> np.ndarray:
    """Rows of 0/1 over ``vocabulary``; an empty or unknown value counts as ``mode``."""
    index = {v: i for i, v in enumerate(vocabulary)}
    codes = np.asarray([index.get(str(v), mode) for v in values], dtype=np.int64)
    return np.eye(len(vocabulary), dtype=np.float32)[codes]


def transform(fitted: Fitted, numeric: np.ndarray, categorical: Sequence[np.ndarray]) -> np.ndarray:
    """Raw rows as the model's features (float32), in the order the Keras layers produce."""
    numeric = np.asarray(numeric, dtype=np.float64).reshape(len(numeric), -1)
    empty = np.isnan(numeric)
    filled = np.where(empty, fitted.fill, numeric)
    parts = [(filled - fitted.mean) / np.sqrt(fitted.variance)]
    if fitted.indicators:
        parts.append(empty[:, list(fitted.indicators)].astype(np.float64))
    parts += [
        one_hot(values, vocab, mode)
        for values, vocab, mode in zip(categorical, fitted.vocabularies, fitted.modes, strict=True)
    ]
    return np.concatenate(parts, axis=1).astype(np.float32)
