"""Tabular data from the user's own files: CSV, NPZ or Parquet.

One reader serves the simulation (``dataset=csv|npz|parquet``, :func:`load`) and a deployed
SuperNode's local file (:mod:`fedflower.deploy.local_data`), so both accept the same schema and
fail with the same :class:`~fedflower.errors.DataError` messages.

File schema
-----------
CSV
    UTF-8 (a byte-order mark, as spreadsheet programs write, is accepted), a header row, then
    one row per example. The label column holds integers or text (class names); one-hot
    labels are several 0/1 columns named together. Feature columns are numeric, categorical
    or free text (left out), empty cells follow ``dataset.missing`` (see :mod:`.tables`).
Parquet
    The same columns as the CSV (needs ``pyarrow``, part of ``fedflower[sim]``).
NPZ
    ``numpy.savez`` archive with ``x`` (numbers, shape ``(n, *input_shape)``) and ``y``
    (integer or text labels of shape ``(n,)``, or one-hot of shape ``(n, classes)``).

Only :mod:`numpy` and the standard library are imported at module level (Parquet imports
``pyarrow`` when asked for): a slim SuperNode install reads CSV and NPZ.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedflower.data import tables
from fedflower.data.source import ClientData, Columns, TabularSource
from fedflower.errors import DataError

if TYPE_CHECKING:  # sklearn, imported by the text module, is no SuperNode dependency
    from fedflower.data.text import TextSource

TABLE_SUFFIXES = (".csv", ".parquet")
SUFFIXES = (".csv", ".npz", ".parquet")
MIN_ROWS = 2


def fail(path: Path, problem: str, fix: str) -> DataError:
    """A ``DataError`` naming the file, what is wrong and how to fix it."""
    return DataError(f"data file {str(path)!r}: {problem}; {fix}")


def check_path(path: str | Path, suffixes: Sequence[str] = SUFFIXES) -> Path:
    """The path as a ``Path`` if it names an existing file with a known suffix."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise fail(path, "is a directory", "give the path of a file inside it")
    if path.suffix.lower() not in suffixes:
        raise fail(
            path, f"has suffix {path.suffix or '(none)'!r}", f"use one of {', '.join(suffixes)}"
        )
    if not path.is_file():
        raise fail(path, "does not exist", "check the path (relative to the working directory)")
    return path


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """The columns of a CSV file with a header row, as arrays of text."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise fail(path, f"cannot be read ({exc})", "give a readable UTF-8 CSV file") from exc
    if not rows:
        raise fail(path, "is empty", "write a header row and one row per example")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header) or "" in header:
        raise fail(path, f"has empty or repeated column names {header}", "name every column once")
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise fail(
                path,
                f"line {line} has {len(row)} cells but the header has {len(header)} columns",
                "give every row one value per column",
            )
    if not body:
        raise fail(path, "has a header but no rows", "write one row per example below the header")
    cells = np.asarray(body, dtype=str).reshape(len(body), len(header))
    return {name: np.char.strip(cells[:, i]) for i, name in enumerate(header)}


def read_parquet(path: Path) -> dict[str, np.ndarray]:
    """The columns of a Parquet file."""
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError as exc:
        raise fail(path, "needs pyarrow", "pip install 'fedflower[sim]'") from exc
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own error types for damaged files
        raise fail(path, f"is not a readable Parquet file ({exc})", "write it again") from exc
    if table.num_rows == 0:
        raise fail(path, "has no rows", "write one row per example")
    return {name: _text(table.column(name).to_pylist()) for name in table.column_names}


def _text(values: list) -> np.ndarray:
    """A Parquet column as text cells, as a CSV file would hold them: nulls (and NaN) empty."""
    cells = ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]
    return np.asarray(cells, dtype=str)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an NPZ archive; it must hold ``x`` and ``y``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
        raise fail(
            path,
            f"is not a readable NPZ archive ({type(exc).__name__}: {exc})",
            "write it with numpy.savez (a truncated copy? copy it again)",
        ) from exc
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise fail(
            path,
            f"has no array {' and '.join(map(repr, missing))} "
            f"(arrays: {', '.join(arrays) or 'none'})",
            "save the features as 'x' and the labels as 'y'",
        )
    return arrays


def read_table(path: Path) -> dict[str, np.ndarray]:
    """The columns of a CSV or Parquet file."""
    return read_parquet(path) if path.suffix.lower() == ".parquet" else read_csv(path)


def numbers(path: Path, values: np.ndarray, what: str) -> np.ndarray:
    """``values`` as float64; text that is no number, NaN and infinity are errors."""
    try:
        out = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise fail(path, f"{what} has a non-numeric value ({exc})", "use numbers only") from exc
    if not np.all(np.isfinite(out)):
        raise fail(path, f"{what} contains NaN, empty or infinite values", "clean them")
    return out


def columns_xy(
    path: Path,
    table: dict[str, np.ndarray],
    label: str | Sequence[str],
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Features (float64, 2-D) and raw labels of a table.

    ``label`` names the label column, or several 0/1 columns of a one-hot label. ``features``
    picks feature columns in that order; by default every column but the labels and
    ``exclude`` (e.g. the client column).
    """
    labels = [label] if isinstance(label, str) else list(label)
    for name in [*labels, *(features or []), *exclude]:
        if name not in table:
            kind = "label column" if name in labels else "column"
            raise fail(
                path,
                f"has no {kind} {name!r} (columns: {', '.join(table) or 'none'})",
                "name an existing column (dataset.label, dataset.features, "
                "dataset.client_column; on a SuperNode the node config's label-column)",
            )
    names = list(features) if features else [c for c in table if c not in {*labels, *exclude}]
    if not names:
        raise fail(path, "has a label column but no feature columns", "add the feature columns")
    x = np.stack([numbers(path, table[c], f"column {c!r}") for c in names], axis=1)
    y = table[labels[0]] if len(labels) == 1 else np.stack([table[c] for c in labels], axis=1)
    return x, y


def _is_text(y: np.ndarray) -> bool:
    return y.dtype.kind in "USO"


def label_codes(
    path: Path, y: np.ndarray, part: str, classes: Sequence[str] | None = None
) -> np.ndarray:
    """Integer class labels from integers, one-hot rows or (with ``classes``) class names.

    Parameters
    ----------
    classes : sequence of str, optional
        Class names in label order; text labels need them (see :func:`class_names`).
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if _is_text(y) and np.any(np.char.strip(y.astype(str)) == ""):
        raise fail(path, f"{part} has rows without a label", "give every row its label")
    if _is_text(y) and classes is not None and y.ndim == 1:
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted({str(v) for v in y} - set(index))
        if unknown:
            raise fail(path, f"{part} has unknown classes {unknown[:5]}", f"use {list(classes)}")
        return np.asarray([index[str(v)] for v in y], dtype=np.int64)
    if _is_text(y):
        y = _text_integers(path, y, part)
    if y.ndim == 2:
        return _one_hot_codes(path, numbers(path, y, f"{part} labels"), part)
    if y.ndim != 1:
        raise fail(path, f"{part} labels have shape {y.shape}", "give one integer label per row")
    values = numbers(path, y, f"{part} labels")
    if np.any(values != np.round(values)) or np.any(values < 0):
        raise fail(
            path, f"{part} labels must be non-negative integers", "encode classes as 0, 1, ..."
        )
    return values.astype(np.int64)


def _text_integers(path: Path, y: np.ndarray, part: str) -> np.ndarray:
    """Text labels that are all integers ("0", "1") as numbers, else a DataError."""
    try:
        return np.asarray(y, dtype=np.float64)
    except ValueError:
        examples = ", ".join(repr(str(v)) for v in np.unique(y)[:3])
        raise fail(
            path,
            f"{part} labels are text ({examples}, ...)",
            "encode classes as 0, 1, ... (text labels are read by dataset=csv|npz|parquet, "
            "which numbers the class names in sorted order)",
        ) from None


def _one_hot_codes(path: Path, y: np.ndarray, part: str) -> np.ndarray:
    if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
        raise fail(
            path,
            f"{part} labels have shape {y.shape} but are not one-hot rows",
            "give one integer label per row, or rows of 0/1 with a single 1",
        )
    return np.argmax(y, axis=1).astype(np.int64)


def class_names(*labels: np.ndarray) -> list[str] | None:
    """Sorted class names of text labels (``None`` when the labels are numbers)."""
    texts = [np.asarray(y) for y in labels if y is not None]
    if not texts or not all(_is_text(y) and y.ndim == 1 for y in texts):
        return None
    names = sorted({str(v) for y in texts for v in y})
    try:
        np.asarray(names, dtype=np.float64)
    except ValueError:
        return names
    return None  # numbers written as text: read as integers


def features_checked(path: Path, x: np.ndarray, part: str, n: int) -> np.ndarray:
    """Feature rows as float32, checked: 2-D or more, one per label, finite numbers."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise fail(
            path, f"{part} features have shape {x.shape}", "give a 2-D array (rows x features)"
        )
    if len(x) != n:
        raise fail(
            path, f"{part} has {len(x)} feature rows but {n} labels", "give one label per row"
        )
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise fail(
            path, f"{part} features contain non-numeric, NaN or infinite values", "clean them"
        )
    return x.astype(np.float32)


def held_out(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) row indices holding out ``test_fraction`` of ``n`` rows."""
    from fedflower.checks import check_number

    check_number(
        "dataset.test_fraction",
        test_fraction,
        minimum=0.0,
        maximum=1.0,
        min_open=True,
        max_open=True,
    )
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, round(n * test_fraction)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def group_codes(groups: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Each row's site as a number (0, 1, ... in sorted order of the sites) and the names."""
    names, codes = np.unique(np.asarray(groups), return_inverse=True)
    return tuple(str(n) for n in names), codes.astype(np.int64).ravel()


def num_classes(y: np.ndarray, y_test: np.ndarray, raw: np.ndarray, names: list[str] | None) -> int:
    """Classes of integer labels ``y``/``y_test``: named ones, one-hot columns or max + 1."""
    if names is not None:
        return max(2, len(names))
    if np.ndim(raw) == 2 and np.shape(raw)[1] > 1:
        return int(np.shape(raw)[1])
    return max(2, int(max(y.max(), y_test.max())) + 1)


def standardize(x: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale every feature to zero mean and unit variance with the training rows' statistics.

    The test rows are scaled with the same statistics, so nothing of them leaks into training.
    A constant feature is only centred.
    """
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    return ((x - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def _read_npz(
    path: Path, label: str | Sequence[str], client_column: str | None, test: bool = False
) -> tables.Rows:
    """Features, raw labels and client ids (or ``None``) of an NPZ archive."""
    arrays = read_npz(path)
    labels = label if isinstance(label, str) else "y"
    for name in (labels, client_column):
        if name is not None and name not in arrays and not (test and name == client_column):
            raise fail(path, f"has no array {name!r} (arrays: {', '.join(arrays)})", "add it")
    groups = arrays.get(client_column) if client_column else None
    return tables.Rows(path, arrays["x"], arrays[labels], groups)


def _read_tables(
    file: Path,
    test_file: Path | None,
    labels: list[str],
    client_column: str | None,
    options: tables.Options,
) -> tuple[tables.Rows, tables.Rows | None, Columns]:
    """Both tables' rows in the training table's column layout."""
    table = read_table(file)
    test = read_table(test_file) if test_file else None
    tables.check_named(file, table, labels)
    tables.check_client(file, table, client_column)
    if test_file and test is not None:
        tables.check_named(test_file, test, labels)
    others = [] if test is None else [test]
    columns, _ = tables.layout(file, table, labels, client_column, options, others)
    rows = tables.rows(file, table, columns, labels, client_column, options.missing)
    test_rows = None
    if test_file and test is not None:
        test_rows = tables.rows(test_file, test, columns, labels, None, options.missing)
    return rows, test_rows, columns


def _read(
    path: str,
    test_path: str | None,
    labels: list[str],
    client_column: str | None,
    options: tables.Options,
) -> tuple[tables.Rows, tables.Rows | None, Columns | None]:
    """The training file's rows, the test file's (if any) and the table columns (or ``None``)."""
    file = check_path(path)
    test_file = check_path(test_path) if test_path else None
    if file.suffix.lower() == ".npz":
        if options.features:
            raise fail(file, "is an NPZ archive", "dataset.features picks CSV/Parquet columns")
        test = _read_npz(test_file, labels, client_column, True) if test_file else None
        return _read_npz(file, labels[0] if len(labels) == 1 else "y", client_column), test, None
    return _read_tables(file, test_file, labels, client_column, options)


def _npz_columns(x: np.ndarray, label: str, names: list[str] | None) -> Columns | None:
    """2-D NPZ features as numeric columns ``x0, x1, ...`` (other shapes: ``None``)."""
    if np.ndim(x) != 2 or not np.issubdtype(np.asarray(x).dtype, np.number):
        return None
    numeric = tuple(f"x{i}" for i in range(np.shape(x)[1]))
    return Columns(numeric=numeric, label=label, class_names=tuple(names) if names else None)


def load(
    path: str,
    label: str | Sequence[str] = "label",
    test_path: str | None = None,
    test_fraction: float = 0.2,
    client_column: str | None = None,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    missing: str = "error",
    missing_indicator: bool = False,
    standardize_features: bool = True,
    seed: int = 0,
    text_column: str | None = None,
) -> TabularSource:
    """A user's data file as a dataset: a training pool for the clients and a central test set.

    Parameters
    ----------
    path : str
        The training file (``.csv``, ``.npz`` or ``.parquet``, see the module docstring).
    label : str or list of str
        The label column (NPZ: the label array, ``y``), or the 0/1 columns of a one-hot label.
        Text labels are numbered in sorted order of the class names.
    test_path : str, optional
        A file of the same schema as the central test set; otherwise ``test_fraction`` of the
        rows is held out (seeded).
    test_fraction : float
        Share of rows held out as the test set when there is no ``test_path``.
    client_column : str, optional
        A column (NPZ: an array) naming each row's client, e.g. its hospital: the dataset then
        has natural groups, one client per distinct value (``partition=auto|natural``).
    features : list of str, optional
        Feature columns (default: every other column, by role, see :mod:`.tables`).
    exclude : list of str
        Columns never used as features.
    missing : {"error", "drop", "impute"}
        What an empty cell does (see :mod:`.tables`).
    missing_indicator : bool
        With ``impute``: a 0/1 feature per numeric column that had empty cells.
    standardize_features : bool
        Scale numeric features to zero mean and unit variance, with statistics merged from
        the clients' (see :mod:`fedflower.aggregation.preprocessing`); an NPZ archive of
        images is scaled with its training pool's.
    seed : int
        Seed of the held-out split.
    text_column : str, optional
        A free-text column to classify with ``model=text``: the dataset's examples are then
        that column's text (see :func:`text_table`), the other feature
        columns unused.
    """
    options = tables.Options(features, exclude, missing, missing_indicator)
    labels = [label] if isinstance(label, str) else list(label)
    if text_column is not None:
        table = read_table(check_path(path, TABLE_SUFFIXES))
        test_table = read_table(check_path(test_path, TABLE_SUFFIXES)) if test_path else None
        return text_table(
            Path(path),
            table,
            test_table,
            text_column,
            labels[0],
            client_column,
            test_fraction,
            seed,
        )
    rows, test_rows, columns = _read(path, test_path, labels, client_column, options)
    if test_rows is None:
        train, test = held_out(len(rows.y), test_fraction, seed)
        test_rows = tables.Rows(rows.file, rows.x[test], rows.y[test], None)
        groups = None if rows.groups is None else np.asarray(rows.groups)[train]
        rows = tables.Rows(rows.file, rows.x[train], rows.y[train], groups)
    return _source(rows, test_rows, columns, labels[0], standardize_features)


def _source(
    rows: tables.Rows,
    test: tables.Rows,
    columns: Columns | None,
    label: str,
    standardize_features: bool,
) -> TabularSource:
    """The dataset of the training and test rows, labels numbered, features checked."""
    names = class_names(rows.y, test.y)
    y = label_codes(rows.file, rows.y, "train", names)
    y_test = label_codes(test.file, test.y, "test", names)
    raw = [np.asarray(rows.y), np.asarray(test.y)]
    if raw[0].ndim == 1:  # one-hot labels name their classes by columns
        tables.single_class(rows.file, np.concatenate(raw), label)
    x, x_test = _features(rows, test, y, y_test, raw=columns is not None)
    if columns is None:
        columns = _npz_columns(x, label, names)
    if columns is None and standardize_features:
        x, x_test = standardize(x, x_test)
    if columns is not None:
        columns = replace(
            columns, class_names=tuple(names) if names else None, normalize=standardize_features
        )
    sites, groups = (None, None) if rows.groups is None else group_codes(rows.groups)
    return TabularSource(
        name=rows.file.stem,
        x=x,
        y=y,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes(y, y_test, rows.y, names),
        groups=groups,
        group_names=sites,
        columns=columns,
    )


def _features(
    rows: tables.Rows, test: tables.Rows, y: np.ndarray, y_test: np.ndarray, raw: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Both feature arrays as float32, checked (raw-encoded table rows may hold NaN)."""
    if raw:
        x, x_test = rows.x.astype(np.float32), test.x.astype(np.float32)
    else:
        x = features_checked(rows.file, rows.x, "train", len(y))
        x_test = features_checked(test.file, test.x, "test", len(y_test))
    if x.shape[1:] != x_test.shape[1:]:
        raise fail(
            test.file,
            f"rows have shape {x_test.shape[1:]}, training rows {x.shape[1:]}",
            "give both files the same feature columns",
        )
    return x, x_test


def client_table(path: str | Path, columns: Columns, missing: str) -> tuple[ClientData, Columns]:
    """A node's own table read in the server's ``columns``: raw-encoded rows, all training.

    The categories are the file's own (a site may lack or add values); the returned columns
    name them, so the node's statistics count values by name. The validation split is made
    by the caller.
    """
    file = check_path(path, TABLE_SUFFIXES)
    table = read_table(file)
    tables.check_named(file, table, [columns.label])
    categories = tuple(
        tuple(sorted({str(v) for v in table.get(c, ()) if str(v)})) for c in columns.categorical
    )
    local = replace(columns, categories=categories)
    rows = tables.rows(file, table, local, [columns.label], None, missing)
    y = label_codes(file, rows.y, "train", columns.class_names)
    if len(y) < MIN_ROWS:
        raise fail(file, f"has {len(y)} examples", f"give at least {MIN_ROWS}")
    x = rows.x.astype(np.float32)
    return ClientData(x, y, x[:0], y[:0]), local


PUBLIC_FRACTION = 0.1
"""Share of a table's training rows held out as the public split its vocabulary comes from."""


def text_table(
    path: Path,
    table: dict[str, np.ndarray],
    test: dict[str, np.ndarray] | None,
    column: str,
    label: str,
    client_column: str | None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> TextSource:
    """A table's free-text column as a sentence-classification dataset (``model=text``).

    The examples are the cells of ``column`` (an empty cell is an empty sentence), the labels
    ``label``'s; ``client_column`` keeps each row's site. The vocabulary is adapted on a
    public split of the training rows (:data:`PUBLIC_FRACTION`, seeded) that no client trains
    on, as for the other text datasets (see the module docstring); the test set is the test
    file, or ``test_fraction`` of the rows held out.
    """
    from fedflower.data.text import TextSource, adapt_vocabulary

    for name, rows in (("the file", table), ("the test file", test)):
        if rows is not None:
            tables.check_named(path, rows, [label])
            if column not in rows:
                raise fail(
                    path,
                    f"{name} has no text column {column!r} (columns: {', '.join(rows)})",
                    "name an existing column in dataset.text_column",
                )
    tables.check_client(path, table, client_column)
    texts, labels = table[column].astype(str), table[label]
    groups = table[client_column] if client_column else None
    order = np.random.default_rng([seed, 1]).permutation(len(labels))
    public = order[: max(1, round(PUBLIC_FRACTION * len(labels)))]
    train = np.sort(order[len(public) :])
    if test is None:
        kept, held = held_out(len(train), test_fraction, seed)
        test_idx, train = train[held], train[kept]
        test_texts, test_labels = texts[test_idx], labels[test_idx]
    else:
        test_texts, test_labels = test[column].astype(str), test[label]
    names = class_names(labels, test_labels)
    y = label_codes(path, labels[train], "train", names)
    y_test = label_codes(path, test_labels, "test", names)
    tables.single_class(path, np.concatenate([labels, test_labels]), label)
    return TextSource(
        name=path.stem,
        x=texts[train].reshape(-1, 1),
        y=y,
        x_test=np.asarray(test_texts).reshape(-1, 1),
        y_test=y_test,
        num_classes=num_classes(y, y_test, labels, names),
        groups=None if groups is None else np.unique(groups[train], return_inverse=True)[1],
        vocabulary=adapt_vocabulary(texts[public].tolist(), 2000),
        class_names=tuple(names or (str(i) for i in range(max(2, int(y.max()) + 1)))),
        text_column=column,
        label_column=label,
    )
