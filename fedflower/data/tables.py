"""Column roles and empty cells of a CSV or Parquet table.

Every column of a table has one role: the label, the client (site) column, a numeric or a
categorical feature, or free text. Numbers are found by parsing every non-empty cell;
other columns are categorical when they hold few distinct short values, free text otherwise.
Free text is left out of the features (with a one-line notice naming it). Empty cells (and
Parquet nulls) follow ``dataset.missing``: ``error`` (the default) names the column and the
first row, ``drop`` leaves those rows out, ``impute`` keeps them for the preprocessing fitted
on the clients' statistics (mean or most frequent value, see
:mod:`fedflower.aggregation.preprocessing`).

The tables arrive as text columns (:func:`fedflower.data.files.read_table`), so a CSV file and
a Parquet file with the same cells are read alike.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedflower.data.source import Columns
from fedflower.errors import DataError

log = logging.getLogger(__name__)

MISSING_MODES = ("error", "drop", "impute")
MAX_CATEGORIES = 50
"""A non-numeric column with more distinct values than this is free text."""
TEXT_WORDS = 3.0
"""A non-numeric column whose cells hold this many words on average is free text."""


def fail(path: Path, problem: str, fix: str) -> DataError:
    """A ``DataError`` naming the file, what is wrong and how to fix it."""
    return DataError(f"data file {str(path)!r}: {problem}; {fix}")


def row_name(path: Path, index: int) -> str:
    """How a user finds row ``index`` (0-based, after the header) in the file."""
    return f"line {index + 2}" if path.suffix.lower() == ".csv" else f"row {index + 1}"


@dataclass(frozen=True)
class Options:
    """How the reader treats the columns: ``dataset.features``, ``exclude``, ``missing``.

    Raises
    ------
    ConfigError
        A bare string where a list belongs, or an unknown ``missing`` mode.
    """

    features: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    missing: str = "error"
    missing_indicator: bool = False

    def __post_init__(self) -> None:
        from fedflower.checks import check_choice
        from fedflower.errors import ConfigError

        for key in ("features", "exclude"):
            value = getattr(self, key)
            if isinstance(value, str):
                raise ConfigError(
                    f"dataset.{key} must be a list of column names, got the string {value!r}; "
                    f"use a list: dataset.{key}=[{value}]"
                )
            if value is not None:
                object.__setattr__(self, key, tuple(str(v) for v in value))
        check_choice("dataset.missing", self.missing, MISSING_MODES)


def empty(values: np.ndarray) -> np.ndarray:
    """Which cells of a text column are empty."""
    return np.char.str_len(values.astype(str)) == 0


def check_filled(path: Path, table: dict[str, np.ndarray], column: str, role: str) -> None:
    """Refuse an empty cell in the label or client column, naming its row."""
    holes = np.flatnonzero(empty(table[column]))
    if len(holes):
        raise fail(
            path,
            f"{role} column {column!r} is empty in {row_name(path, int(holes[0]))}"
            f" ({len(holes)} empty cell{'s' if len(holes) > 1 else ''})",
            f"give every row its {role} (or leave those rows out of the file)",
        )


def is_numeric(values: np.ndarray) -> bool:
    """Whether every non-empty cell parses as a number."""
    try:
        np.asarray(values[~empty(values)], dtype=np.float64)
    except ValueError:
        return False
    return True


def is_text(values: np.ndarray) -> bool:
    """Whether a non-numeric column is free text rather than a category."""
    filled = values[~empty(values)].astype(str)
    if len(filled) == 0:
        return False
    words = np.mean([len(v.split()) for v in filled])
    return bool(len(np.unique(filled)) > MAX_CATEGORIES or words >= TEXT_WORDS)


def candidates(
    path: Path, table: dict[str, np.ndarray], taken: Sequence[str], options: Options
) -> list[str]:
    """The feature columns asked for (``features``), or all but ``taken`` and ``exclude``."""
    for name in [*(options.features or ()), *options.exclude]:
        if name not in table:
            raise fail(
                path,
                f"has no column {name!r} (columns: {', '.join(table)})",
                "name an existing column in dataset.features / dataset.exclude",
            )
    if options.features:
        return list(options.features)
    return [c for c in table if c not in {*taken, *options.exclude}]


def roles(
    path: Path, table: dict[str, np.ndarray], names: Sequence[str], options: Options
) -> tuple[list[str], list[str], list[str], list[str]]:
    """The numeric, categorical, free-text and all-empty columns among ``names``."""
    numeric, categorical, text, blank = [], [], [], []
    for name in names:
        values = table[name]
        if empty(values).all():  # no information; drop would leave no row, impute no mean
            if options.features:
                raise fail(
                    path,
                    f"column {name!r} is empty in every row",
                    "fill it or leave it out of dataset.features",
                )
            blank.append(name)
        elif is_numeric(values):
            numeric.append(name)
        elif is_text(values):
            if options.features:
                raise fail(
                    path,
                    f"column {name!r} is free text",
                    "leave it out of dataset.features (or use model=text for a text column)",
                )
            text.append(name)
        else:
            categorical.append(name)
    if not numeric and not categorical:
        raise fail(path, "has a label column but no feature columns", "add the feature columns")
    return numeric, categorical, text, blank


def missing_rows(
    path: Path, table: dict[str, np.ndarray], names: Sequence[str], mode: str
) -> np.ndarray:
    """Rows to keep: all of them, or (``drop``) those without an empty cell in ``names``."""
    n = len(next(iter(table.values())))
    holes = np.zeros(n, dtype=bool)
    for name in names:
        blank = empty(table[name])
        if mode == "error" and blank.any():
            raise fail(
                path,
                f"column {name!r} is empty in {row_name(path, int(np.flatnonzero(blank)[0]))}"
                f" ({int(blank.sum())} empty cell{'s' if blank.sum() > 1 else ''})",
                "fill the cells, or set dataset.missing=drop (leave those rows out) or "
                "dataset.missing=impute (mean / most frequent value, fitted federatedly)",
            )
        holes |= blank
    if mode == "drop" and holes.any():
        log.info("%s: %d rows with empty cells left out (dataset.missing=drop)", path, holes.sum())
    return ~holes if mode == "drop" else np.ones(n, dtype=bool)


def numeric_column(path: Path, values: np.ndarray, name: str) -> np.ndarray:
    """A numeric column as float64, NaN where empty; NaN or infinity written out are errors."""
    blank = empty(values)
    out = np.full(len(values), np.nan)
    out[~blank] = np.asarray(values[~blank], dtype=np.float64)
    bad = np.flatnonzero(~blank & ~np.isfinite(out))
    if len(bad):
        raise fail(
            path,
            f"column {name!r} holds {str(values[bad[0]])!r} in {row_name(path, int(bad[0]))}",
            "write a finite number, or leave the cell empty (see dataset.missing)",
        )
    return out


def category_codes(values: np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Index of each cell in ``categories`` (sorted), NaN where empty."""
    values = values.astype(str)
    out = np.searchsorted(np.asarray(categories), values).astype(np.float64)
    out[empty(values)] = np.nan
    return out


def summary(columns: Columns, text: Sequence[str], client: str | None) -> str:
    """The one-line schema printed when a table is read."""
    parts = [
        f"numeric {list(columns.numeric)}",
        f"categorical {list(columns.categorical)}",
        f"text (left out) {list(text)}",
        f"label {columns.label!r}",
        f"client {client!r}",
    ]
    return "columns: " + "; ".join(parts)


def single_rows(path: Path, groups: np.ndarray, column: str) -> None:
    """Refuse a client (site) with one row: it can neither train nor hold out a row."""
    names, counts = np.unique(groups.astype(str), return_counts=True)
    lonely = names[counts < 2]
    if len(lonely):
        raise fail(
            path,
            f"client column {column!r} has value {str(lonely[0])!r} in one row only",
            "give every site at least 2 rows (or merge that site into another)",
        )


def single_class(path: Path, y: np.ndarray, label: str) -> None:
    """Refuse a label column with one class: a model would learn nothing."""
    classes = np.unique(np.asarray(y).astype(str))
    if len(classes) < 2:
        raise fail(
            path,
            f"label column {label!r} has one class only ({str(classes[0])!r})",
            "a classifier needs rows of at least 2 classes",
        )


@dataclass(frozen=True)
class Rows:
    """One table's rows: raw-encoded features (see ``Columns``), raw labels, client ids."""

    file: Path
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None


def check_named(path: Path, table: dict[str, np.ndarray], labels: Sequence[str]) -> None:
    """Every label column exists and no label cell is empty."""
    for name in labels:
        if name not in table:
            raise fail(
                path,
                f"has no label column {name!r} (columns: {', '.join(table) or 'none'})",
                "name an existing column (dataset.label; on a SuperNode the node config's "
                "label-column)",
            )
        check_filled(path, table, name, "label")


def check_client(path: Path, table: dict[str, np.ndarray], client: str | None) -> None:
    """The client column exists, has no empty cell and no site of one row."""
    if client is None:
        return
    if client not in table:
        raise fail(
            path,
            f"has no column {client!r} (columns: {', '.join(table)})",
            "name an existing column in dataset.client_column",
        )
    check_filled(path, table, client, "client")
    single_rows(path, table[client], client)


def layout(
    path: Path,
    table: dict[str, np.ndarray],
    labels: Sequence[str],
    client: str | None,
    options: Options,
    others: Sequence[dict[str, np.ndarray]] = (),
) -> tuple[Columns, list[str]]:
    """The feature columns of ``table`` by role, and the free-text columns left out.

    The categories of a categorical column are its distinct values in ``table`` and the
    ``others`` (a separate test file), sorted: the codes of every file then agree.
    """
    names = candidates(path, table, [*labels, *([client] if client else [])], options)
    numeric, categorical, text, blank = roles(path, table, names, options)
    categories = tuple(
        tuple(sorted({str(v) for t in (table, *others) if c in t for v in t[c] if str(v)}))
        for c in categorical
    )
    columns = Columns(
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        categories=categories,
        label=labels[0],
        missing_indicator=options.missing_indicator,
    )
    log.info("%s %s", path.name, summary(columns, text, client))
    if text:
        log.warning(
            "free-text columns %s are left out of the features "
            "(dataset.exclude=[...] silences this; dataset.text_column=<name> model=text "
            "classifies a text column)",
            text,
        )
    if blank:
        log.warning(
            "columns %s are empty in every row and left out of the features "
            "(dataset.exclude=[...] silences this)",
            blank,
        )
    return columns, text


def rows(
    path: Path,
    table: dict[str, np.ndarray],
    columns: Columns,
    labels: Sequence[str],
    client: str | None,
    missing: str,
) -> Rows:
    """The table's rows in ``columns``' raw encoding, after ``missing``'s rule."""
    for name in columns.names:
        if name not in table:
            raise fail(path, f"has no column {name!r}", "give every file the same columns")
    keep = missing_rows(path, table, columns.names, missing)
    parts = [numeric_column(path, table[c], c) for c in columns.numeric]
    parts += [
        category_codes(table[c], cats)
        for c, cats in zip(columns.categorical, columns.categories, strict=True)
    ]
    x = np.stack(parts, axis=1)[keep]
    y = table[labels[0]] if len(labels) == 1 else np.stack([table[c] for c in labels], axis=1)
    groups = table[client][keep] if client is not None and client in table else None
    return Rows(path, x, y[keep], groups)


def write_rows(path: Path, columns: Columns, x: np.ndarray, y: np.ndarray) -> Path:
    """Write raw-encoded rows as the table they came from: named columns, blanks, class names.

    Numbers are written back as read (empty where NaN), category codes as their values and
    labels by their class names, so a site's file reads as the original table's rows.
    """
    import csv

    k = len(columns.numeric)
    names = columns.class_names
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*columns.names, columns.label])
        for row, label in zip(x, y, strict=True):
            numbers = ["" if np.isnan(v) else f"{v:.7g}" for v in row[:k]]
            cats = [
                "" if np.isnan(code) else cats[int(code)]
                for code, cats in zip(row[k:], columns.categories, strict=True)
            ]
            writer.writerow([*numbers, *cats, names[int(label)] if names else int(label)])
    return path
