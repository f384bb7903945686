"""A SuperNode's own data: a local CSV or NPZ file, or a demo partition of a bundled dataset.

In a deployment every site trains on data that never leaves it. The SuperNode names that
data in its node config (``flower-supernode --node-config "data-path='/data/site.csv'"``);
for demos and tests it can instead ask for one partition of the experiment's dataset
(``--node-config "partition-id=0 num-partitions=3"``), which gives exactly the data the
same client gets in simulation.

File schema
-----------
The reader is :mod:`fedflower.data.files`, the one ``dataset=csv|npz`` uses in simulation.

CSV
    UTF-8 (with or without a byte-order mark), a header row, then one row per example. One
    column holds the integer class label (``label`` unless the node config sets
    ``label-column``); every other column is a numeric feature, in the order the model
    expects. Empty cells, text and NaN/inf values are errors.
NPZ
    ``numpy.savez`` archive with ``x`` (float, shape ``(n, *input_shape)``) and ``y``
    (integer labels of shape ``(n,)`` or one-hot rows); optionally ``x_val``/``y_val`` as the
    local validation split (otherwise ``client.val_fraction`` of the rows is held out, seeded
    from the run's seed and the file's content).

Text class names are refused on a node: every node must number the classes alike, so the
labels are written as integers (``dataset=csv`` numbers text labels in simulation).

A run on a CSV/Parquet table (``dataset=csv|parquet``) reads the node's file as a table
instead (:func:`node_table`): columns by name, categories, blank cells and class names, as
the server's statistics query names them (:mod:`fedflower.client.statistics`).

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
from fedflower.data import files
from fedflower.data.source import ClientData, Columns
from fedflower.determinism import derive_seed
from fedflower.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_LABEL_COLUMN = "label"
SUFFIXES = (".csv", ".npz")


def read_csv(path: Path, label_column: str = DEFAULT_LABEL_COLUMN) -> tuple[np.ndarray, np.ndarray]:
    """Features and raw labels of a CSV file with a header row (see the module docstring)."""
    x, y = files.columns_xy(path, files.read_csv(path), label_column)
    return x, files.numbers(path, y, "label column")


def content_id(path: str | Path) -> int:
    """A stable id of a data file from its bytes (CRC-32): the same data, the same seeds.

    Ids derived from the path would change with the directory the file sits in (a demo's
    timestamped run directory), and with them the validation split and the results.
    """
    try:
        return zlib.crc32(Path(path).expanduser().read_bytes())
    except OSError:
        return 0  # the loader reports the unreadable file


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
    path = files.check_path(path, SUFFIXES)
    if path.suffix.lower() == ".csv":
        x_raw, y_raw = files.columns_xy(path, files.read_csv(path), label_column)
        arrays: dict[str, Any] = {"x": x_raw, "y": y_raw}
    else:
        arrays = files.read_npz(path)
    y = files.label_codes(path, arrays["y"], "train")
    x = files.features_checked(path, arrays["x"], "train", len(y))
    if len(y) < files.MIN_ROWS:
        raise files.fail(path, f"has {len(y)} examples", f"give at least {files.MIN_ROWS}")
    if "x_val" in arrays and "y_val" in arrays:
        y_val = files.label_codes(path, arrays["y_val"], "validation")
        x_val = files.features_checked(path, arrays["x_val"], "validation", len(y_val))
        if x_val.shape[1:] != x.shape[1:]:
            raise files.fail(
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
        seed = derive_seed(int(cfg.seed), content_id(path))
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
    return _partitioned(node_config, cfg)[0]


def _partitioned(node_config: Mapping[str, Any], cfg: Any) -> tuple[ClientData, Columns | None]:
    """The simulated client's data of the node's ``partition-id`` (and its table's columns)."""
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
    source, fed = load_federation(cfg)
    return fed.client(pid), source.columns


def node_table(
    node_config: Mapping[str, Any], cfg: Any, columns: Columns
) -> tuple[ClientData, Columns]:
    """A SuperNode's raw table rows in the server's ``columns`` (and the columns they use).

    ``data-path``: the node's own CSV/Parquet file, read by the simulation's table reader
    with the run's ``dataset.missing``, a seeded validation split held out; a demo partition:
    the simulated client's raw rows.
    """
    if keys.DATA_PATH not in node_config:
        if keys.PARTITION_ID not in node_config:
            node_data(node_config, cfg)  # raises: the node config names no data
        data, own = _partitioned(node_config, cfg)  # a partition of the run's own table
        return data, own or columns
    path = str(node_config[keys.DATA_PATH])
    if Path(path).suffix.lower() == ".npz":  # an archive of numeric rows: x0, x1, ...
        return node_data(node_config, cfg), columns
    rows, local = files.client_table(path, columns, str(cfg.dataset.get("missing", "error")))
    seed = derive_seed(int(cfg.seed), content_id(path))
    split = split_validation(rows.x_train, rows.y_train, float(cfg.client.val_fraction), seed)
    return split, local
