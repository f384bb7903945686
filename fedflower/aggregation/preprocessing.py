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
        Counts are floats: with privacy on they carry noise (:func:`noised`).
    """

    rows: int
    count: np.ndarray
    total: np.ndarray
    squares: np.ndarray
    empty: np.ndarray
    categories: list[dict[str, float]] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        """The numbers as named arrays (what a client's reply carries, with the categories)."""
        return {
            "rows": np.asarray([self.rows], dtype=np.float64),
            "count": self.count,
            "total": self.total,
            "squares": self.squares,
            "empty": self.empty,
        }

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], categories: Sequence[dict[str, float]]
    ) -> Statistics:
        """The inverse of :meth:`arrays`."""
        return cls(
            rows=round(float(np.asarray(arrays["rows"])[0])),
            count=np.asarray(arrays["count"], dtype=np.float64),
            total=np.asarray(arrays["total"], dtype=np.float64),
            squares=np.asarray(arrays["squares"], dtype=np.float64),
            empty=np.asarray(arrays["empty"], dtype=np.float64),
            categories=[dict(c) for c in categories],
        )


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
        categories=[{k: float(v) for k, v in c.items()} for c in counts],
    )


def bounds(numeric: np.ndarray) -> np.ndarray:
    """Per numeric column the largest absolute filled value (1 where none is filled).

    The server takes them from its own rows (the central test set): clients clip their values
    to them, which bounds what one row adds to a sum (see :func:`noised`).
    """
    numeric = np.asarray(numeric, dtype=np.float64).reshape(len(numeric), -1)
    filled = np.where(np.isnan(numeric), 0.0, np.abs(numeric))
    out = filled.max(axis=0) if len(numeric) else np.zeros(numeric.shape[1])
    return np.where(out > 0, out, 1.0)


def clipped(numeric: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """Numeric rows with every filled value clipped to ``[-limits, limits]`` (NaN kept)."""
    return np.clip(np.asarray(numeric, dtype=np.float64), -limits, limits)


def noised(
    stats: Statistics, multiplier: float, limits: np.ndarray, rng: np.random.Generator
) -> Statistics:
    """The statistics with Gaussian noise of std ``multiplier`` x what one row can change.

    One row changes a count (of filled or empty cells, or of a category's value) by 1, a sum
    by at most ``limits[j]`` and a sum of squares by ``limits[j] ** 2`` once its values are
    clipped (:func:`clipped`): the Gaussian mechanism applied to each statistic (Dwork & Roth
    2014, "The Algorithmic Foundations of Differential Privacy", section 3.5.3). The names of
    the categories and the number of rows (which every training reply carries too) are sent as
    they are; only the counts and sums are noised.
    """

    def noise(scale: np.ndarray | float, shape: tuple[int, ...]) -> np.ndarray:
        return rng.normal(0.0, 1.0, shape) * multiplier * np.asarray(scale)

    n = stats.count.shape
    return Statistics(
        rows=stats.rows,
        count=stats.count + noise(1.0, n),
        total=stats.total + noise(limits, n),
        squares=stats.squares + noise(np.square(limits), n),
        empty=stats.empty + noise(1.0, n),
        categories=[
            {k: v + float(noise(1.0, ())) for k, v in sorted(c.items())} for c in stats.categories
        ],
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
    flagged = np.flatnonzero(stats.empty >= 0.5)  # noised counts are not whole
    indicators = tuple(int(i) for i in flagged) if missing_indicator else ()
    return Fitted(
        mean=mean if normalize else np.zeros_like(mean),
        variance=variance if normalize else np.ones_like(variance),
        fill=mean,
        indicators=indicators,
        vocabularies=vocabularies,
        modes=modes,
    )


def _most_frequent(vocabulary: Sequence[str], counts: dict[str, float]) -> int:
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


def split_raw(
    x: np.ndarray, categories: Sequence[Sequence[str]]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Raw-encoded rows as numeric columns (NaN where empty) and text columns (``""``: empty).

    A table's rows are held as one float array: its numeric columns, then one column per
    categorical column holding the index of the value in ``categories`` (NaN where empty).
    """
    k = x.shape[1] - len(categories)
    texts = []
    for j, cats in enumerate(categories):
        codes = x[:, k + j]
        table = np.asarray([*cats, ""], dtype=str)
        texts.append(table[np.where(np.isnan(codes), len(cats), codes).astype(np.int64)])
    return np.asarray(x[:, :k], dtype=np.float64), texts


def features(fitted: Fitted, x: np.ndarray, categories: Sequence[Sequence[str]]) -> np.ndarray:
    """Raw-encoded rows (see :func:`split_raw`) as the model's features."""
    return transform(fitted, *split_raw(x, categories))
