"""Preprocessing from the clients' merged statistics equals the pooled rows'; the Keras layers
in front of the saved model compute what the NumPy transform computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import clinical

from fedflower.aggregation.preprocessing import Fitted, fit, merge, statistics, transform
from fedflower.data.files import load
from fedflower.data.partition import FederatedData
from fedflower.data.tables import split_raw


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


def test_federated_fit_equals_pooled_rows_while_clients_send_statistics_only(
    tmp_path: Path,
) -> None:
    from fedflower.server.preprocessing import client_statistics, prepare

    path = clinical(tmp_path)
    src = load(str(path), label="readmitted", client_column="hospital", missing="impute")
    fed = FederatedData(src, _natural(), 4, val_fraction=0.2, seed=0)
    shared = [client_statistics(src.columns, fed.client(c)) for c in range(4)]  # type: ignore[arg-type]
    for part, c in zip(shared, range(4), strict=True):
        assert part.rows == len(fed.client(c).y_train)  # a summary of rows, never a row
        assert part.count.shape == (4,) and len(part.categories) == 1
    pooled_rows = np.concatenate([fed.client(c).x_train for c in range(4)])
    numeric, categorical = split_raw(src.columns, pooled_rows)  # type: ignore[arg-type]
    prepared = prepare(src, fed)
    fitted = Fitted.from_dict(prepared.preprocessing)  # type: ignore[arg-type]
    np.testing.assert_allclose(fitted.fill, np.nanmean(numeric, axis=0), rtol=1e-12)
    np.testing.assert_allclose(fitted.variance, np.nanvar(numeric, axis=0), rtol=1e-9)
    values, counts = np.unique(categorical[0][categorical[0] != ""], return_counts=True)
    assert fitted.vocabularies == (tuple(values),)
    assert fitted.vocabularies[0][fitted.modes[0]] == values[np.argmax(counts)]
    features = np.concatenate([fed.client(c).x_train for c in range(4)])
    assert features.shape[1] == fitted.width and np.isfinite(features).all()
    np.testing.assert_allclose(features[:, :4].mean(axis=0), 0, atol=1e-3)


def _natural():  # type: ignore[no-untyped-def]
    from fedflower.data.partition import AutoPartitioner

    return AutoPartitioner(4)


def test_keras_layers_compute_the_numpy_transform(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from fedflower import model_inputs

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
