"""A SuperNode's local data: the CSV/NPZ schema, its errors, and demo partitions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from fedflower.deploy.local_data import load_file, node_data, read_csv, write_csv
from fedflower.errors import DataError
from fedflower.experiment import load_data


def table(n: int = 20, f: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, f)).astype(np.float32), rng.integers(0, 2, n)


def test_csv_round_trip_keeps_values_and_label_column(tmp_path: Path) -> None:
    x, y = table()
    path = write_csv(tmp_path / "site.csv", x, y)
    x2, y2 = read_csv(path)
    np.testing.assert_allclose(x2, x, rtol=1e-6)
    np.testing.assert_array_equal(y2, y)
    data = load_file(path, val_fraction=0.25, seed=1)
    assert len(data.y_train) == 15 and len(data.y_val) == 5
    rows = np.concatenate([data.x_train, data.x_val])
    np.testing.assert_allclose(rows[np.argsort(rows[:, 0])], x[np.argsort(x[:, 0])], rtol=1e-6)


def test_csv_label_column_may_sit_anywhere_and_be_renamed(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_text("a,diagnosis,b\n1.5,1,2\n3,0,4\n5,1,6\n")
    x, y = read_csv(path, "diagnosis")
    np.testing.assert_array_equal(x, [[1.5, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(y, [1, 0, 1])


def test_npz_with_explicit_validation_split(tmp_path: Path) -> None:
    x, y = table(10)
    path = tmp_path / "site.npz"
    np.savez(path, x=x, y=y, x_val=x[:3], y_val=y[:3])
    data = load_file(path)
    np.testing.assert_array_equal(data.x_train, x)
    np.testing.assert_array_equal(data.y_val, y[:3])


def test_split_is_seeded(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "s.csv", *table(30))
    a, b = load_file(path, seed=3), load_file(path, seed=3)
    np.testing.assert_array_equal(a.y_val, b.y_val)
    np.testing.assert_array_equal(a.x_train, b.x_train)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "does not exist"),
        ("site.txt", "a,label\n1,0\n", "suffix"),
        ("site.csv", "", "is empty"),
        ("site.csv", "a,b,target\n1,2,0\n3,4,1\n", "no label column 'label'"),
        ("site.csv", "label\n0\n1\n", "no feature columns"),
        ("site.csv", "a,b,label\n1,2,0\n3,4\n", "line 3 has 2 cells"),
        ("site.csv", "a,b,label\n1,x,0\n3,4,1\n", "non-numeric"),
        ("site.csv", "a,b,label\n1,2,0.5\n3,4,1\n", "non-negative integers"),
        ("site.csv", "a,b,label\n1,2,-1\n3,4,1\n", "non-negative integers"),
        ("site.csv", "a,b,label\n1,nan,0\n3,4,1\n", "NaN"),
        ("site.csv", "a,b,label\n1,2,0\n", "has 1 examples"),
        ("site.npz", b"not a zip", "not a readable NPZ"),
    ],
)
def test_bad_files_raise_a_data_error_naming_file_and_fix(
    tmp_path: Path, name: str, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_file(path)
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"features": np.zeros((3, 2)), "y": np.zeros(3)}, "no array 'x'"),
        ({"x": np.zeros(3), "y": np.zeros(3)}, "features have shape"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(4)}, "3 feature rows but 4 labels"),
        ({"x": np.zeros((3, 2)), "y": np.zeros((3, 2))}, "labels have shape"),
        (
            {"x": np.zeros((3, 2)), "y": np.zeros(3), "x_val": np.zeros((2, 5)), "y_val": [0, 1]},
            "x_val rows have shape",
        ),
    ],
)
def test_bad_npz_shapes(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "site.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_file(path)


def test_node_data_prefers_the_file_and_explains_a_missing_key(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = tiny_cfg()
    path = write_csv(tmp_path / "s.csv", *table(10))
    data = node_data({"data-path": str(path), "partition-id": 0}, cfg)
    assert data.x_train.shape[1] == 3
    with pytest.raises(DataError, match="neither 'data-path' nor 'partition-id'"):
        node_data({}, cfg)


def test_partition_node_gets_the_simulated_clients_data(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    cfg = tiny_cfg()
    _, fed = load_data(cfg)
    data = node_data({"partition-id": 2, "num-partitions": 3}, cfg)
    np.testing.assert_array_equal(data.x_train, fed.client(2).x_train)
    np.testing.assert_array_equal(data.y_val, fed.client(2).y_val)
    with pytest.raises(DataError, match="num-partitions=5 but the run has num_clients=3"):
        node_data({"partition-id": 0, "num-partitions": 5}, cfg)
    with pytest.raises(DataError, match=r"must lie in \[0, 2\]"):
        node_data({"partition-id": 3, "num-partitions": 3}, cfg)


def test_a_table_node_reads_its_own_file_in_the_servers_columns(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    from conftest import clinical

    from fedflower.data.files import load
    from fedflower.data.tables import write_rows
    from fedflower.deploy.local_data import node_table

    path = clinical(tmp_path)
    src = load(str(path), label="readmitted", client_column="hospital", missing="impute")
    assert src.columns is not None
    site = write_rows(tmp_path / "site.csv", src.columns, src.x[:40], src.y[:40])
    cfg = make_cfg([f"dataset.path={path}", "dataset=csv", "dataset.missing=impute"])
    data, local = node_table({"data-path": str(site)}, cfg, src.columns)
    assert len(data.y_train) + len(data.y_val) == 40 and data.x_train.shape[1] == 5
    assert local.numeric == src.columns.numeric and local.class_names == ("no", "yes")
    assert set(local.categories[0]) <= set(src.columns.categories[0])
    with pytest.raises(DataError, match=r"column 'age' is empty in line \d+.*missing=impute"):
        node_table(
            {"data-path": str(site)}, make_cfg(["dataset=csv", f"dataset.path={path}"]), src.columns
        )
    npz = tmp_path / "site.npz"
    np.savez(npz, x=np.zeros((10, 5)), y=np.arange(10) % 2)
    assert node_table({"data-path": str(npz)}, cfg, src.columns)[1] == src.columns
