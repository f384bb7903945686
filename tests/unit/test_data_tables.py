"""Column roles, empty cells and malformed tables: one line naming the file and the cell."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

from fedflower.data.files import load
from fedflower.errors import ConfigError, DataError

HEADER = "age,smoker,notes,site,y"


def write(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def clinic(path: Path, n: int = 24, blank: str = "") -> Path:
    """Rows with a number, a category, a note, a site and a yes/no label; ``blank`` empties."""
    rows = []
    for i in range(n):
        age = "" if blank == "age" and i == 5 else str(40 + i)
        smoker = "" if blank == "smoker" and i == 7 else ["never", "former", "current"][i % 3]
        site = "" if blank == "site" and i == 9 else "ABC"[i % 3]
        rows.append(f"{age},{smoker},note {i} taken at the visit,{site},{['no', 'yes'][i % 2]}")
    return write(path, rows)


def parquet(path: Path, columns: dict[str, list]) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_roles_are_found_and_printed_in_one_line(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="fedflower.data.tables"):
        src = load(str(clinic(tmp_path / "c.csv")), label="y", client_column="site")
    assert src.columns is not None
    assert src.columns.numeric == ("age",) and src.columns.categorical == ("smoker",)
    assert src.columns.categories == (("current", "former", "never"),)
    assert src.columns.class_names == ("no", "yes")
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        "numeric ['age']; categorical ['smoker']; text (left out) ['notes']; label 'y'; "
        "client 'site'" in line
        for line in lines
    )
    assert any("free-text columns ['notes'] are left out" in line for line in lines)


def test_features_and_exclude_pick_columns(tmp_path: Path) -> None:
    path = str(clinic(tmp_path / "c.csv"))
    src = load(path, label="y", client_column="site", features=["smoker"])
    assert src.columns is not None and src.columns.names == ("smoker",)
    src = load(path, label="y", client_column="site", exclude=["smoker", "notes"])
    assert src.columns is not None and src.columns.names == ("age",)


def test_a_bare_string_for_features_says_use_a_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset.features must be a list .*use a list"):
        load(str(clinic(tmp_path / "c.csv")), label="y", features="age")  # type: ignore[arg-type]


def test_a_free_text_column_named_as_a_feature_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"column 'notes' is free text; leave it out"):
        load(str(clinic(tmp_path / "c.csv")), label="y", features=["age", "notes"])


@pytest.mark.parametrize("column, line", [("age", 7), ("smoker", 9)])
def test_an_empty_cell_names_column_row_and_the_option(tmp_path: Path, column, line) -> None:
    path = clinic(tmp_path / "c.csv", blank=column)
    with pytest.raises(DataError) as info:
        load(str(path), label="y", client_column="site")
    message = str(info.value)
    assert f"column {column!r} is empty in line {line}" in message
    assert "dataset.missing=drop" in message and "dataset.missing=impute" in message
    assert str(path) in message and "\n" not in message


def test_missing_drop_leaves_the_rows_out_and_impute_keeps_them(tmp_path: Path) -> None:
    path = str(clinic(tmp_path / "c.csv", blank="age"))
    dropped = load(path, label="y", missing="drop", test_fraction=0.25)
    kept = load(path, label="y", missing="impute", test_fraction=0.25)
    assert len(dropped.y) + len(dropped.y_test) == 23
    assert len(kept.y) + len(kept.y_test) == 24
    assert np.isnan(np.concatenate([kept.x, kept.x_test])[:, 0]).sum() == 1


def test_an_unknown_missing_mode(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.missing must be one of error, drop, impute"):
        load(str(clinic(tmp_path / "c.csv")), label="y", missing="mean")


def test_an_empty_client_cell_stops_the_run(tmp_path: Path) -> None:
    path = clinic(tmp_path / "c.csv", blank="site")
    with pytest.raises(DataError, match=r"c\.csv': client column 'site' is empty in line 11"):
        load(str(path), label="y", client_column="site")


def test_a_site_with_one_row(tmp_path: Path) -> None:
    path = write(tmp_path / "s.csv", ["1,a,x,A,no", "2,b,x,A,yes", "3,a,x,B,no"])
    with pytest.raises(DataError, match=r"client column 'site' has value 'B' in one row only"):
        load(str(path), label="y", client_column="site")


def test_one_class_only_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "o.csv", [f"{i},a,x,A,yes" for i in range(6)])
    with pytest.raises(DataError, match=r"o\.csv': label column 'y' has one class only \('yes'\)"):
        load(str(path), label="y")


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_table_without_rows_names_the_file_without_numpy_warnings(
    tmp_path: Path, kind: str
) -> None:
    if kind == "csv":
        path = write(tmp_path / "h.csv", [])
    else:
        path = parquet(tmp_path / "h.parquet", {"age": [1.0], "y": ["no"]})
        import pyarrow.parquet as pq

        pq.write_table(pq.read_table(path).slice(0, 0), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=rf"h\.{kind}': has .*no rows"):
            load(str(path), label="y")


def test_a_null_parquet_label_is_no_class_of_its_own(tmp_path: Path) -> None:
    labels = ["no", "yes"] * 5
    labels[3] = None  # type: ignore[call-overload]
    path = parquet(tmp_path / "n.parquet", {"age": [float(i) for i in range(10)], "y": labels})
    with pytest.raises(DataError, match=r"n\.parquet': label column 'y' is empty in row 4"):
        load(str(path), label="y")


def test_a_null_parquet_site_is_one_clear_line(tmp_path: Path) -> None:
    sites = ["A", "B"] * 5
    sites[6] = None  # type: ignore[call-overload]
    columns = {"age": [float(i) for i in range(10)], "site": sites, "y": ["no", "yes"] * 5}
    path = parquet(tmp_path / "s.parquet", columns)
    with pytest.raises(DataError, match=r"s\.parquet': client column 'site' is empty in row 7"):
        load(str(path), label="y", client_column="site")


def test_parquet_nulls_in_features_follow_dataset_missing(tmp_path: Path) -> None:
    ages: list[float | None] = [float(i) for i in range(10)]
    ages[2] = None
    path = parquet(tmp_path / "f.parquet", {"age": ages, "y": ["no", "yes"] * 5})
    with pytest.raises(DataError, match=r"column 'age' is empty in row 3"):
        load(str(path), label="y")
    src = load(str(path), label="y", missing="impute", test_fraction=0.2)
    assert np.isnan(np.concatenate([src.x, src.x_test])).sum() == 1


def test_nan_written_in_a_cell_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path / "n.csv", ["1,y", "nan,n", "3,y"], header="a,y")
    with pytest.raises(DataError, match=r"column 'a' holds 'nan' in line 3"):
        load(str(path), label="y")


def test_a_text_column_becomes_the_sentences_of_model_text(tmp_path: Path) -> None:
    from fedflower.data.files import PUBLIC_FRACTION
    from fedflower.data.text import TextSource

    src = load(
        str(clinic(tmp_path / "c.csv", n=60)),
        label="y",
        client_column="site",
        text_column="notes",
        test_fraction=0.2,
    )
    assert isinstance(src, TextSource) and src.x.shape[1:] == (1,) and src.x.dtype.kind == "U"
    public = round(PUBLIC_FRACTION * 60)
    assert len(src.y) + len(src.y_test) == 60 - public  # the public rows train no client
    assert set(src.vocabulary) >= {"note", "taken", "at", "the", "visit"}
    seen = {str(s[0]) for s in src.x} | {str(s[0]) for s in src.x_test}
    numbers = {t for s in seen for t in s.split() if t.isdigit()}
    held = {t for t in src.vocabulary if t.isdigit()}
    assert held and not held & numbers  # the vocabulary's own rows are no client's rows
    assert src.class_names == ("no", "yes") and src.groups is not None
    assert src.table_meta() == {
        "text": "notes",
        "numeric": [],
        "categorical": [],
        "label": "y",
        "class_names": ["no", "yes"],
    }


def test_an_unknown_text_column_names_the_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"has no text column 'memo' \(columns: age, smoker"):
        load(str(clinic(tmp_path / "c.csv")), label="y", text_column="memo")


@pytest.mark.parametrize("missing", ["error", "drop", "impute"])
def test_a_column_empty_in_every_row_is_left_out_with_a_notice(
    tmp_path: Path, caplog, missing: str
) -> None:
    rows = [f"{40 + i},,{['no', 'yes'][i % 2]}" for i in range(24)]
    path = str(write(tmp_path / "c.csv", rows, header="age,unused,y"))
    with caplog.at_level(logging.INFO, logger="fedflower.data.tables"):
        src = load(path, label="y", missing=missing, test_fraction=0.25)
    assert src.columns is not None and src.columns.names == ("age",)
    assert len(src.y) + len(src.y_test) == 24
    assert any(
        "columns ['unused'] are empty in every row" in r.getMessage() for r in caplog.records
    )
    with pytest.raises(DataError, match=r"column 'unused' is empty in every row; fill it"):
        load(path, label="y", features=["age", "unused"])
