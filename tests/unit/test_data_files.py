"""A user's CSV/NPZ/Parquet file as a dataset: labels, splits, scaling, groups and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedflower.data.files import load, standardize
from fedflower.deploy.local_data import load_file
from fedflower.errors import ConfigError, DataError


def write(path: Path, header: str, rows: list[str], bom: bool = False) -> Path:
    text = "\n".join([header, *rows]) + "\n"
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def patients(path: Path, n: int = 40, bom: bool = False) -> Path:
    """Rows of (age, weight, site, diagnosis) with text labels and three sites."""
    rng = np.random.default_rng(0)
    rows = [
        f"{rng.normal(50, 10):.3f},{rng.normal(70, 5):.3f},{'ABC'[i % 3]},"
        f"{['healthy', 'sick'][i % 2]}"
        for i in range(n)
    ]
    return write(path, "age,weight,site,diagnosis", rows, bom=bom)


def test_csv_with_text_labels_client_column_and_held_out_test(tmp_path: Path) -> None:
    path = patients(tmp_path / "p.csv")
    src = load(str(path), label="diagnosis", client_column="site", test_fraction=0.25, seed=1)
    assert src.num_classes == 2 and src.input_shape == (2,)
    assert len(src.y) == 30 and len(src.y_test) == 10
    assert set(src.y) | set(src.y_test) == {0, 1}  # healthy -> 0, sick -> 1 (sorted names)
    assert sorted(set(src.groups.tolist())) == [0, 1, 2]  # type: ignore[union-attr]
    again = load(str(path), label="diagnosis", client_column="site", test_fraction=0.25, seed=1)
    np.testing.assert_array_equal(again.x_test, src.x_test)


def test_image_arrays_are_standardised_with_training_rows_only(tmp_path: Path) -> None:
    x = np.array([[0.0, 5.0], [2.0, 5.0]])
    x_test = np.array([[4.0, 7.0]])
    xs, xt = standardize(x, x_test)
    np.testing.assert_allclose(xs, [[-1, 0], [1, 0]])  # constant column is only centred
    np.testing.assert_allclose(xt, [[3, 2]])  # scaled with the training mean 1 / std 1


def test_table_rows_stay_raw_until_the_clients_statistics_are_merged(tmp_path: Path) -> None:
    src = load(str(patients(tmp_path / "p.csv")), label="diagnosis", client_column="site")
    assert src.columns is not None and src.columns.numeric == ("age", "weight")
    assert src.preprocessing is None
    assert 40 < float(src.x[:, 0].mean()) < 60  # ages as written in the file


def test_feature_selection_and_separate_test_file(tmp_path: Path) -> None:
    train = write(tmp_path / "a.csv", "u,v,w,label", ["1,2,3,0", "4,5,6,1", "7,8,9,2"])
    test = write(tmp_path / "b.csv", "w,u,label", ["3,1,0", "9,7,2"])
    src = load(str(train), test_path=str(test), features=["w", "u"], standardize_features=False)
    np.testing.assert_array_equal(src.x, [[3, 1], [6, 4], [9, 7]])
    np.testing.assert_array_equal(src.x_test, [[3, 1], [9, 7]])
    assert src.num_classes == 3 and src.groups is None


def test_one_hot_labels_in_csv_columns_and_npz(tmp_path: Path) -> None:
    csv = write(tmp_path / "h.csv", "x,a,b,c", ["1,0,0,1", "2,1,0,0", "3,0,1,0", "4,0,0,1"])
    src = load(str(csv), label=["a", "b", "c"], test_fraction=0.25)
    assert src.num_classes == 3
    assert sorted(np.concatenate([src.y, src.y_test]).tolist()) == [0, 1, 2, 2]
    npz = tmp_path / "h.npz"
    np.savez(npz, x=np.arange(8.0).reshape(4, 2), y=np.eye(4)[[0, 1, 2, 3]])
    assert load(str(npz), label="y", test_fraction=0.25).num_classes == 4


def test_npz_text_labels_are_numbered_in_simulation_refused_on_a_node(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    np.savez(path, x=np.zeros((6, 2)), y=np.array(["cat", "dog", "eel"] * 2), site=[1, 2] * 3)
    src = load(str(path), label="y", client_column="site", test_fraction=0.5, seed=0)
    assert src.num_classes == 3 and src.groups is not None
    with pytest.raises(
        DataError, match=r"labels are text \('cat', 'dog', 'eel', \.\.\.\); encode classes as 0, 1"
    ):
        load_file(path)


def test_parquet_reads_like_csv(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    table = {"f": [0.5, 1.5, 2.5, 3.5], "label": ["no", "yes", "no", "yes"]}
    pq.write_table(pa.table(table), path)
    src = load(str(path), test_fraction=0.5, standardize_features=False)
    assert src.num_classes == 2
    assert sorted(np.concatenate([src.x, src.x_test])[:, 0].tolist()) == table["f"]


def test_bom_written_by_spreadsheets_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "s.csv", "label,a", ["0,1.5", "1,2.5", "0,3"], bom=True)
    data = load_file(path, val_fraction=0.0)
    np.testing.assert_array_equal(np.sort(data.y_train), [0, 0, 1])
    path = patients(tmp_path / "p.csv", bom=True)
    src = load(str(path), label="diagnosis", features=["weight"], client_column="site")
    assert src.input_shape == (1,) and src.num_classes == 2


def test_truncated_npz(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    np.savez(path, x=np.zeros((50, 3)), y=np.zeros(50))
    path.write_bytes(path.read_bytes()[:300])
    for reader in (load_file, lambda p: load(str(p))):
        with pytest.raises(DataError, match=r"t\.npz.*not a readable NPZ archive \(BadZipFile"):
            reader(path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "is a directory; give the path of a file inside it"),
        ({"path": "nope.csv"}, "does not exist"),
        ({"path": "p.csv", "label": "outcome"}, "no label column 'outcome'.*dataset.label"),
        ({"path": "p.csv", "label": "diagnosis", "features": ["x"]}, "no column 'x'"),
        ({"path": "p.csv", "label": "diagnosis", "client_column": "s"}, "no column 's'"),
        ({"path": "h.csv"}, r"column 'a' is empty in line 3 \(1 empty cell\); .*missing=drop"),
        (
            {"path": "p.csv", "label": "diagnosis", "client_column": "site", "test_path": "no.csv"},
            "no.csv': does not exist",
        ),
        ({"path": "e.csv"}, "label column 'label' is empty in line 3"),
        ({"path": "n.npz", "features": ["a"]}, "dataset.features picks CSV/Parquet columns"),
    ],
)
def test_bad_input_is_one_data_error_naming_the_file(
    tmp_path: Path, options: dict, message: str
) -> None:
    patients(tmp_path / "p.csv")
    write(tmp_path / "e.csv", "a,label", ["1,yes", "2,"])
    write(tmp_path / "h.csv", "a,label", ["1,yes", ",no", "3,no"])
    np.savez(tmp_path / "n.npz", x=np.zeros((3, 2)), y=np.zeros(3))
    options = {"path": ".", **options}
    options["path"] = str(tmp_path / options["path"])
    if "test_path" in options:
        options["test_path"] = str(tmp_path / options["test_path"])
    with pytest.raises(DataError, match=message) as info:
        load(**options)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_directory_given_to_a_node(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        load_file(tmp_path)


def test_test_fraction_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset.test_fraction must be a number in \(0, 1\)"):
        load(
            str(patients(tmp_path / "p.csv")), "diagnosis", client_column="site", test_fraction=1.0
        )


def test_node_split_follows_the_files_content_not_its_path(tiny_cfg, tmp_path: Path) -> None:
    from fedflower.deploy.local_data import node_data, write_csv

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    splits = [
        node_data({"data-path": str(write_csv(tmp_path / folder / "site.csv", x, y))}, tiny_cfg())
        for folder in ("2026-01-01_10-00-00", "2026-01-02_11-30-00")  # a demo's timestamped dirs
    ]
    np.testing.assert_array_equal(splits[0].x_val, splits[1].x_val)
    other = node_data(
        {"data-path": str(write_csv(tmp_path / "b.csv", x[::-1], y[::-1]))}, tiny_cfg()
    )
    assert not np.array_equal(np.sort(other.x_val[:, 0]), np.sort(splits[0].x_val[:, 0]))
