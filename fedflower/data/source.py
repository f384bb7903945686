"""The in-memory form every dataset loader returns, checked once on creation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedflower.checks import check_number
from fedflower.errors import DataError


def _check_xy(
    name: str, part: str, x: np.ndarray, y: np.ndarray, num_classes: int, raw: bool = False
) -> None:
    if x.ndim < 2:
        raise DataError(f"{name}: {part} features must be 2-D or more, got shape {x.shape}")
    if len(x) != len(y):
        raise DataError(f"{name}: {part} has {len(x)} feature rows but {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{name}: {part} split is empty")
    if np.issubdtype(x.dtype, np.number) and not raw and not np.all(np.isfinite(x)):
        raise DataError(f"{name}: {part} features contain NaN or infinite values")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(
            f"{name}: {part} labels must lie in [0, {num_classes - 1}], got [{y.min()}, {y.max()}]"
        )


@dataclass(frozen=True)
class Columns:
    """The columns of a table and their roles, as the reader found them.

    A table's rows are held as one float array ("raw-encoded"): the numeric columns as read
    (NaN where a cell was empty), then each categorical column as the index of its value in
    ``categories`` (NaN where empty). Preprocessing fitted on the clients' statistics turns
    them into the model's features; the saved model takes the raw columns by name.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    categories: tuple[tuple[str, ...], ...] = ()
    label: str = "label"
    class_names: tuple[str, ...] | None = None
    normalize: bool = True
    missing_indicator: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """The feature columns in the order of the raw-encoded array."""
        return (*self.numeric, *self.categorical)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the server's statistics query names)."""
        return {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "categories": [list(c) for c in self.categories],
            "label": self.label,
            "class_names": None if self.class_names is None else list(self.class_names),
            "normalize": self.normalize,
            "missing_indicator": self.missing_indicator,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Columns:
        """The inverse of :meth:`as_dict`."""
        names = data.get("class_names")
        return cls(
            numeric=tuple(data["numeric"]),
            categorical=tuple(data["categorical"]),
            categories=tuple(tuple(c) for c in data["categories"]),
            label=str(data["label"]),
            class_names=None if names is None else tuple(str(n) for n in names),
            normalize=bool(data["normalize"]),
            missing_indicator=bool(data["missing_indicator"]),
        )


@dataclass(frozen=True)
class TabularSource:
    """A dataset as arrays: a training pool to split across clients and a central test set.

    Parameters
    ----------
    name : str
        Short name used in messages and results.
    x, y : ndarray
        Training pool: features (float32, or str for text) and integer class labels.
    x_test, y_test : ndarray
        Held-out central test set, never seen by a client.
    num_classes : int
        Number of classes (2 for a binary task).
    groups : ndarray, optional
        A natural client id per training row (e.g. the hospital a patient belongs to).
    group_names : tuple of str, optional
        The name of each group id (``group_names[g]``: the site whose rows carry ``g``).
    columns : Columns, optional
        A table's columns: ``x`` and ``x_test`` are raw-encoded (may hold NaN) until
        preprocessing fitted on the clients' statistics turns them into features.
    preprocessing : dict, optional
        That fitted preprocessing (see :mod:`fedflower.aggregation.preprocessing`), once
        applied: the saved model puts it in front of the trained one.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    groups: np.ndarray | None = None
    group_names: tuple[str, ...] | None = None
    columns: Columns | None = None
    preprocessing: dict | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_number(f"{self.name}.num_classes", self.num_classes, minimum=2, error=DataError)
        raw = self.columns is not None and self.preprocessing is None
        _check_xy(self.name, "train", self.x, self.y, self.num_classes, raw)
        _check_xy(self.name, "test", self.x_test, self.y_test, self.num_classes, raw)
        if self.x.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{self.name}: train rows have shape {self.x.shape[1:]}, "
                f"test rows {self.x_test.shape[1:]}"
            )
        if self.groups is not None and len(self.groups) != len(self.x):
            raise DataError(f"{self.name}: {len(self.groups)} group ids for {len(self.x)} rows")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(int(d) for d in self.x.shape[1:])


@dataclass(frozen=True)
class ClientData:
    """One client's local data: a training split and a validation split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @property
    def num_train(self) -> int:
        """Number of local training examples."""
        return len(self.y_train)
