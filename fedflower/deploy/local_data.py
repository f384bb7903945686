"""A SuperNode's own data: a local CSV or NPZ file, or a demo partition of a bundled dataset.

In a deployment every site trains on data that never leaves it. The SuperNode names that
data in its node config (``flower-supernode --node-config "data-path='/data/site.csv'"``);
for demos and tests it can instead ask for one partition of the experiment's dataset
(``--node-config "partition-id=0 num-partitions=3"``), which gives exactly the data the
same client gets in simulation.

File schema
-----------
CSV
    A header row, then one row per example. One column holds the integer class label
    (``label`` unless the node config sets ``label-column``); every other column is a
    numeric feature, in the order the model expects. Empty cells, text and NaN/inf values
    are errors.
NPZ
    ``numpy.savez`` archive with ``x`` (float, shape ``(n, *input_shape)``) and ``y``
    (integer labels, shape ``(n,)``); optionally ``x_val``/``y_val`` as the local validation
    split (otherwise ``client.val_fraction`` of the rows is held out, seeded).

Every problem raises :class:`fedflower.errors.DataError` with the file, what was found and
what is expected, so the node's error reply tells the server operator what to fix.
"""

from __future__ import annotations

import csv
import logging
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedflower import keys
from fedflower.data.source import ClientData
from fedflower.determinism import derive_seed
from fedflower.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_LABEL_COLUMN = "label"
SUFFIXES = (".csv", ".npz")
MIN_ROWS = 2


def _fail(path: Path, problem: str, fix: str) -> DataError:
    return DataError(f"local data {str(path)!r}: {problem}; {fix}")


def read_csv(path: Path, label_column: str = DEFAULT_LABEL_COLUMN) -> tuple[np.ndarray, np.ndarray]:
    """Read features and labels from a CSV file with a header row (see the module docstring)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot be read ({exc})", "give a readable UTF-8 CSV file") from exc
    if not rows:
        raise _fail(path, "is empty", "write a header row and one row per example")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise _fail(
            path,
            f"has no label column {label_column!r} (columns: {', '.join(header) or 'none'})",
            f"name the label column {label_column!r} or set --node-config "
            f"\"{keys.LABEL_COLUMN}='<name>'\"",
        )
    if len(header) < 2:
        raise _fail(path, "has a label column but no feature columns", "add the feature columns")
    label_at = header.index(label_column)
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise _fail(
                path,
                f"line {line} has {len(row)} cells but the header has {len(header)} columns",
                "give every row one value per column",
            )
    try:
        table = np.asarray(body, dtype=np.float64).reshape(len(body), len(header))
    except ValueError as exc:
        raise _fail(
            path, f"has a non-numeric value ({exc})", "use numbers only, one per cell"
        ) from exc
    y = table[:, label_at]
    x = np.delete(table, label_at, axis=1)
    return x, y


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the arrays of an NPZ file (see the module docstring)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise _fail(
            path, f"is not a readable NPZ archive ({exc})", "write it with numpy.savez"
        ) from exc
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise _fail(
            path,
            f"has no array {' and '.join(map(repr, missing))} "
            f"(arrays: {', '.join(arrays) or 'none'})",
            "save the features as 'x' and the labels as 'y'",
        )
    return arrays


def _labels(path: Path, y: np.ndarray, part: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise _fail(path, f"{part} labels have shape {y.shape}", "give one integer label per row")
    if not np.all(np.isfinite(y)) or np.any(y != np.round(y)) or np.any(y < 0):
        raise _fail(
            path, f"{part} labels must be non-negative integers", "encode classes as 0, 1, ..."
        )
    return y.astype(np.int64)


def _features(path: Path, x: np.ndarray, part: str, n: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2:
        raise _fail(
            path, f"{part} features have shape {x.shape}", "give a 2-D array (rows x features)"
        )
    if len(x) != n:
        raise _fail(
            path, f"{part} has {len(x)} feature rows but {n} labels", "give one label per row"
        )
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise _fail(
            path, f"{part} features contain non-numeric, NaN or infinite values", "clean them"
        )
    return x.astype(np.float32)


def split_validation(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int) -> ClientData:
    """Hold out ``val_fraction`` of the rows (seeded) as the local validation split."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_val = min(len(y) - 1, round(len(y) * val_fraction))
    if val_fraction > 0:
        n_val = max(1, n_val)
    val, train = order[:n_val], order[n_val:]
    return ClientData(x[train], y[train], x[val], y[val])


def load_file(
    path: str | Path,
    label_column: str = DEFAULT_LABEL_COLUMN,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> ClientData:
    """Load a node's local CSV/NPZ file into its training and validation splits.

    Parameters
    ----------
    path : str or Path
        The file (``.csv`` or ``.npz``).
    label_column : str
        Name of the CSV label column.
    val_fraction : float
        Share of rows kept for local validation when the file has no explicit split.
    seed : int
        Seed of that split.

    Raises
    ------
    DataError
        The file is missing, unreadable or does not follow the schema.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in SUFFIXES:
        raise _fail(
            path, f"has suffix {path.suffix or '(none)'!r}", f"use one of {', '.join(SUFFIXES)}"
        )
    if not path.is_file():
        raise _fail(path, "does not exist on this SuperNode", "check the node's data-path")
    if path.suffix.lower() == ".csv":
        x_raw, y_raw = read_csv(path, label_column)
        arrays: dict[str, Any] = {"x": x_raw, "y": y_raw}
    else:
        arrays = read_npz(path)
    y = _labels(path, arrays["y"], "train")
    x = _features(path, arrays["x"], "train", len(y))
    if len(y) < MIN_ROWS:
        raise _fail(path, f"has {len(y)} examples", f"give at least {MIN_ROWS}")
    if "x_val" in arrays and "y_val" in arrays:
        y_val = _labels(path, arrays["y_val"], "validation")
        x_val = _features(path, arrays["x_val"], "validation", len(y_val))
        if x_val.shape[1:] != x.shape[1:]:
            raise _fail(
                path,
                f"x_val rows have shape {x_val.shape[1:]} but x rows {x.shape[1:]}",
                "give both splits the same features",
            )
        return ClientData(x, y, x_val, y_val)
    return split_validation(x, y, val_fraction, seed)


def write_csv(
    path: str | Path, x: np.ndarray, y: np.ndarray, label_column: str = DEFAULT_LABEL_COLUMN
) -> Path:
    """Write ``x`` (2-D) and ``y`` as a CSV file in the schema :func:`load_file` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [f"f{i}" for i in range(x.shape[1])] + [label_column]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row, label in zip(x, y, strict=True):
            writer.writerow([f"{v:.7g}" for v in row] + [int(label)])
    return path


def node_data(node_config: Mapping[str, Any], cfg: Any) -> ClientData:
    """The data a SuperNode trains on, as its node config names it.

    ``data-path`` (a local file) wins over ``partition-id``/``num-partitions`` (a demo
    partition of ``cfg.dataset``, identical to the simulated client's data).

    Raises
    ------
    DataError
        Neither key is set, the file is bad, or the partition does not fit the run.
    """
    if keys.DATA_PATH in node_config:
        label_column = str(node_config.get(keys.LABEL_COLUMN, DEFAULT_LABEL_COLUMN))
        path = str(node_config[keys.DATA_PATH])
        seed = derive_seed(int(cfg.seed), zlib.crc32(path.encode()))
        return load_file(path, label_column, float(cfg.client.val_fraction), seed)
    if keys.PARTITION_ID in node_config:
        return _partition(node_config, cfg)
    raise DataError(
        "this SuperNode has no data: its node config sets neither "
        f"{keys.DATA_PATH!r} nor {keys.PARTITION_ID!r}; start it with "
        f"--node-config \"{keys.DATA_PATH}='/path/to/data.csv'\" or, for a demo, "
        f"--node-config '{keys.PARTITION_ID}=0 {keys.NUM_PARTITIONS}={cfg.num_clients}'"
    )


def _partition(node_config: Mapping[str, Any], cfg: Any) -> ClientData:
    from fedflower.experiment import load_federation

    pid = int(node_config[keys.PARTITION_ID])
    parts = int(node_config.get(keys.NUM_PARTITIONS, cfg.num_clients))
    if parts != cfg.num_clients:
        raise DataError(
            f"node config {keys.NUM_PARTITIONS}={parts} but the run has "
            f"num_clients={cfg.num_clients}: run with --run-config "
            f"\"{keys.RUN_OVERRIDES}='num_clients={parts}'\" or start the nodes with "
            f"{keys.NUM_PARTITIONS}={cfg.num_clients}"
        )
    if not 0 <= pid < parts:
        raise DataError(f"node config {keys.PARTITION_ID}={pid} must lie in [0, {parts - 1}]")
    _, fed = load_federation(cfg)
    return fed.client(pid)
