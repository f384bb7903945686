"""fedflower.export: a relative ``--out`` is written there, reported with its whole path."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from fedflower.deploy.local_data import write_csv
from fedflower.export import export


def test_relative_out_is_reported_as_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    data = write_csv(tmp_path / "d.csv", rng.normal(size=(20, 3)), rng.integers(0, 2, 20))
    monkeypatch.chdir(tmp_path)
    report = export(tmp_path / "m.keras", "exports/m.tflite", data=data)
    assert report.tflite_path == str(tmp_path / "exports" / "m.tflite")
    assert (tmp_path / "exports" / "m.tflite").stat().st_size == report.tflite_file_bytes
    assert f"wrote {tmp_path / 'exports' / 'm.tflite'}" in "\n".join(report.lines())


def test_a_damaged_model_file_is_not_a_keras_model_file(tmp_path: Path) -> None:
    from fedflower.errors import DataError
    from fedflower.export import export

    bad = tmp_path / "model.keras"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match=r"model\.keras' is not a Keras model file"):
        export(bad)


def test_a_text_model_is_not_exported_and_says_why(tmp_path: Path) -> None:
    from fedflower import model_inputs
    from fedflower.errors import DataError

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    meta = {"text": "notes", "numeric": [], "categorical": [], "label": "y", "class_names": []}
    model_inputs.save(model, tmp_path / "model.keras", meta)
    with pytest.raises(DataError, match=r"reads text \(column 'notes'\).*fedflower predict"):
        export(tmp_path)


def test_a_table_model_with_spaces_and_unicode_in_column_names_converts(tmp_path: Path) -> None:
    """TensorFlow's graph names refuse spaces and unicode; the device model's layers carry none."""
    pytest.importorskip("tensorflow")
    from fedflower import model_inputs
    from fedflower.aggregation.preprocessing import fit, statistics
    from fedflower.export import convert

    x = np.array([[1.0], [np.nan], [3.0], [2.0]])
    cats = np.array(["b", "a", "", "new"])
    fitted = fit(statistics(x, [cats]), missing_indicator=False)
    meta = {
        "numeric": ["âge (years)"],
        "categorical": ["smoking status"],
        "label": "y",
        "class_names": ["no", "yes"],
        "preprocessing": fitted.as_dict(),
    }
    core = keras.Sequential([keras.Input((fitted.width,)), keras.layers.Dense(1)])
    raw = model_inputs.with_raw_inputs(core, meta)
    assert len(convert(model_inputs.with_numeric_row(raw, meta))) > 0
