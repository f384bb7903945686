"""Preprocessing from the clients' merged statistics equals the pooled rows'; the Keras layers
in front of the saved model compute what the NumPy transform computes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import clinical

from fedflower.aggregation.preprocessing import Fitted, fit, merge, split_raw, statistics, transform
from fedflower.data.files import load
from fedflower.data.partition import FederatedData
from fedflower.errors import DataError


def test_merged_statistics_are_the_pooled_rows_statistics() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (90, 3))
    x[rng.random(x.shape) < 0.1] = np.nan
    cats = rng.choice(["a", "b", "c", ""], 90, p=[0.5, 0.3, 0.15, 0.05])
    parts = [statistics(x[i::3], [cats[i::3]]) for i in range(3)]
    merged = fit(merge(parts))
    pooled = fit(statistics(x, [cats]))
    np.testing.assert_allclose(merged.mean, np.nanmean(x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.variance, np.nanvar(x, axis=0), rtol=1e-10)
    np.testing.assert_allclose(merged.variance, pooled.variance, rtol=1e-12)
    assert merged.vocabularies == (("a", "b", "c"),) and merged.modes == (0,)


def test_fit_fills_flags_and_encodes() -> None:
    x = np.array([[1.0, 5.0], [np.nan, 5.0], [3.0, 5.0]])
    stats = statistics(x, [np.array(["b", "a", "b"])])
    fitted = fit(stats, missing_indicator=True)
    assert fitted.indicators == (0,) and fitted.width == 2 + 1 + 2
    out = transform(fitted, x, [np.array(["b", "", "zzz"])])
    np.testing.assert_allclose(out[:, 0], [-1, 0, 1])  # mean 2, std 1; empty -> the mean
    np.testing.assert_allclose(out[:, 1], 0)  # a constant column is only centred
    np.testing.assert_allclose(out[:, 2], [0, 1, 0])  # the indicator
    np.testing.assert_allclose(out[:, 3:], [[0, 1], [0, 1], [0, 1]])  # empty/unknown -> "b"
    assert Fitted.from_dict(fitted.as_dict()).as_dict() == fitted.as_dict()
    plain = fit(stats, normalize=False)
    np.testing.assert_allclose(transform(plain, x, [np.array(["a"] * 3)])[:, 0], [1, 2, 3])


class Recording:
    """A grid wrapper keeping every message it sends and every reply it receives."""

    def __init__(self, grid: Any) -> None:
        self.inner, self.sent, self.received = grid, [], []  # type: list[Any]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self.sent += messages
        self.received += replies
        return replies


def message_round(
    tmp_path: Path, privacy: dict[str, Any] | None = None, broken: int | None = None
) -> tuple[Any, Any, Recording]:
    """The clinical table's statistics round on the in-process engine, messages recorded."""
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    from fedflower.client.statistics import query_handler
    from fedflower.engine.local import run_local
    from fedflower.server.preprocessing import Query, federate

    path = clinical(tmp_path)
    src = load(str(path), label="readmitted", client_column="hospital", missing="impute")
    fed = FederatedData(src, _natural(), 4, val_fraction=0.2, seed=0)
    out: list[Any] = []
    server = ServerApp()

    def main(grid: Any, _: Any) -> None:
        recording = Recording(grid)
        out.append((federate(recording, src, Query(4, privacy, seed=3)), recording))

    server.main()(main)

    def raw(ctx: Any, columns: Any) -> Any:
        pid = int(ctx.node_config["partition-id"])
        if pid == broken:
            raise DataError("data file 'site.csv': has no label column 'readmitted'")
        return fed.client(pid), columns

    client = ClientApp()
    client.query()(query_handler(raw))
    run_local(server, client, 4)
    prepared, recording = out[0]
    return (src, fed), prepared, recording


def test_statistics_from_a_message_round_equal_the_pooled_rows_and_no_row_is_sent(
    tmp_path: Path,
) -> None:
    (src, fed), prepared, recording = message_round(tmp_path)
    columns = src.columns
    pooled = np.concatenate([fed.client(c).x_train for c in range(4)])
    numeric, categorical = split_raw(pooled, columns.categories)
    fitted = Fitted.from_dict(prepared.preprocessing)
    np.testing.assert_allclose(fitted.fill, np.nanmean(numeric, axis=0), rtol=1e-12)
    np.testing.assert_allclose(fitted.variance, np.nanvar(numeric, axis=0), rtol=1e-9)
    values, counts = np.unique(categorical[0][categorical[0] != ""], return_counts=True)
    assert fitted.vocabularies == (tuple(values),)
    assert fitted.vocabularies[0][fitted.modes[0]] == values[np.argmax(counts)]
    statistics_replies = recording.received[:4]  # then the 4 acknowledgements of the fit
    assert len(recording.sent) == 8 and {m.metadata.message_type for m in recording.sent} == {
        "query"
    }
    for reply in statistics_replies:  # what a client sends: 4 numbers a column, no row
        arrays = reply.content.array_records["statistics"]
        assert {name: arrays[name].numpy().shape for name in arrays} == {
            "rows": (1,),
            "count": (4,),
            "total": (4,),
            "squares": (4,),
            "empty": (4,),
        }
        assert list(reply.content.array_records) == ["statistics"]
        assert list(reply.content.config_records) == ["categories"]
        assert not reply.content.metric_records
        (counts,) = json.loads(reply.content.config_records["categories"]["categories"])
        assert set(counts) <= set(values)  # per category value: one count
    report = prepared.preprocessing["statistics"]
    assert report["nodes"] == 4 and report["rows"] == len(pooled)
    assert report["bytes_up"] > 4 * 4 * 4 * 8 and report["bytes_down"] > 0
    assert report["noise"] == "none"


def test_statistics_are_noised_on_the_nodes_when_privacy_is_on(tmp_path: Path) -> None:
    privacy = {"name": "dp_server", "noise_multiplier": 0.5}
    (src, fed), prepared, recording = message_round(tmp_path, privacy)
    pooled = np.concatenate([fed.client(c).x_train for c in range(4)])
    numeric, _ = split_raw(pooled, src.columns.categories)
    for reply, c in zip(recording.received[:4], range(4), strict=True):
        counts = reply.content.array_records["statistics"]["count"].numpy()
        exact = (~np.isnan(split_raw(fed.client(c).x_train, src.columns.categories)[0])).sum(0)
        assert np.all(counts != exact) and np.all(np.abs(counts - exact) < 0.5 * 6)
    fitted = Fitted.from_dict(prepared.preprocessing)
    np.testing.assert_allclose(fitted.fill, np.nanmean(numeric, axis=0), rtol=0.05)
    assert not np.allclose(fitted.fill, np.nanmean(numeric, axis=0), rtol=1e-9)
    assert prepared.preprocessing["statistics"]["noise"].startswith("Gaussian, std 0.5 x")


def _natural():  # type: ignore[no-untyped-def]
    from fedflower.data.partition import AutoPartitioner

    return AutoPartitioner(4)


def _raw_rows_case(keras):  # type: ignore[no-untyped-def]
    """Two numeric columns and a categorical one with blanks and an unseen category, their fit,
    the model metadata and an identity core model of the fit's width."""
    x = np.array([[1.0, 5.0], [np.nan, 7.0], [3.0, np.nan], [2.0, 6.0]])
    cats = np.array(["b", "a", "", "new"])
    fitted = fit(statistics(x, [cats]), missing_indicator=True)
    meta = {
        "numeric": ["u", "v"],
        "categorical": ["kind"],
        "label": "y",
        "class_names": ["no", "yes"],
        "preprocessing": fitted.as_dict(),
    }
    core = keras.Sequential([keras.Input((fitted.width,)), keras.layers.Identity()])
    return x, cats, fitted, meta, core


def test_keras_layers_compute_the_numpy_transform(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from fedflower import model_inputs

    x, cats, fitted, meta, core = _raw_rows_case(keras)
    model = model_inputs.with_raw_inputs(core, meta)
    path = tmp_path / "m.keras"
    model_inputs.save(model, path, meta)
    loaded = keras.saving.load_model(path, compile=False)
    import tensorflow as tf

    feed = {
        "kind": tf.constant(cats[:, None]),
        "v": tf.constant(x[:, 1:].astype("float32")),
        "u": tf.constant(x[:, :1].astype("float32")),
    }
    np.testing.assert_allclose(
        np.asarray(loaded(feed)), transform(fitted, x, [cats]), rtol=1e-5, atol=1e-6
    )
    assert model_inputs.read_meta(path) == meta


def test_a_node_that_cannot_read_its_table_is_left_out_of_the_statistics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (_, fed), prepared, _ = message_round(tmp_path, broken=2)
    assert prepared.preprocessing["statistics"]["nodes"] == 3
    rows = sum(len(fed.client(c).y_train) for c in (0, 1, 3))
    assert prepared.preprocessing["statistics"]["rows"] == rows
    assert any(
        "failed the table query" in r.getMessage() and "no label column" in r.getMessage()
        for r in caplog.records
    )


def test_the_numeric_row_model_computes_what_the_raw_rows_model_computes(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from fedflower import model_inputs

    x, cats, fitted, meta, core = _raw_rows_case(keras)
    model_inputs.save(model_inputs.with_raw_inputs(core, meta), tmp_path / "model.keras", meta)
    loaded, stored = model_inputs.load(tmp_path)  # a run directory: its model.keras
    assert stored == meta
    rows = model_inputs.numeric_rows(meta, x, [cats])
    np.testing.assert_array_equal(rows[:, 2], [1, 0, np.nan, 2])  # a, b, new; empty: NaN
    device = model_inputs.with_numeric_row(loaded, stored)
    expected = transform(fitted, x, [cats])
    np.testing.assert_allclose(np.asarray(device(rows)), expected, rtol=1e-5, atol=1e-6)
    rows[2, 2] = -1.0  # an empty or unknown value as -1: the most frequent one, as NaN
    np.testing.assert_allclose(np.asarray(device(rows)), expected, rtol=1e-5, atol=1e-6)


def test_a_raw_rows_model_saves_and_predicts_with_any_column_names(tmp_path: Path) -> None:
    """Column names as spreadsheets write them: spaces, unicode, and ``/`` (a Keras name may not
    hold one), in the numeric and the categorical columns."""
    keras = pytest.importorskip("keras")
    from fedflower import model_inputs

    x, cats, fitted, meta, core = _raw_rows_case(keras)
    meta = {**meta, "numeric": ["BMI kg/m²", "âge (years)"], "categorical": ["smoking/ status"]}
    model_inputs.save(model_inputs.with_raw_inputs(core, meta), tmp_path / "model.keras", meta)
    loaded, stored = model_inputs.load(tmp_path)
    assert stored == meta
    import tensorflow as tf

    out = tf.function(loaded)(model_inputs.feed(meta, x, [cats]))  # as the export's check
    np.testing.assert_allclose(np.asarray(out), transform(fitted, x, [cats]), rtol=1e-5, atol=1e-6)
    rows = model_inputs.numeric_rows(meta, x, [cats])
    device = model_inputs.with_numeric_row(loaded, stored)
    np.testing.assert_allclose(np.asarray(device(rows)), np.asarray(out), rtol=1e-5, atol=1e-6)
