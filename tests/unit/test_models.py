"""A user's own model: from a .keras file or a function; the loss follows the output."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from fedflower.components import instantiate_model, model_factory
from fedflower.errors import ConfigError
from fedflower.models import compile_model, from_factory, from_file

FACTORIES = """
import keras

def build(input_shape, num_classes, units=4):
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Dense(units, activation="relu"),
        keras.layers.Dense(num_classes),  # logits
    ])

def no_args():
    return None

def not_a_model(input_shape, num_classes):
    return "model"

raise_on_import = False
"""


def dense(inputs: int, units: int, activation: str | None) -> keras.Model:
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(units, activation)])


@pytest.fixture
def factories(tmp_path: Path) -> Path:
    path = tmp_path / "user_models.py"
    path.write_text(FACTORIES)
    return path


def test_keras_file_keeps_architecture_and_weights(tmp_path: Path) -> None:
    model = dense(3, 1, "sigmoid")
    model.save(tmp_path / "m.keras")
    loaded = from_file((3,), 2, str(tmp_path / "m.keras"))
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_python_factory_from_a_file_with_options(factories: Path) -> None:
    model = from_factory((5,), 3, f"{factories}:build", {"units": 7})
    assert model.output_shape == (None, 3)
    assert model.layers[0].units == 7


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "must be 'module:function'"),
        ("no_such_module_xyz:build", "cannot be imported: ModuleNotFoundError"),
        ("{f}:missing", "cannot be imported: AttributeError"),
        ("{f}:raise_on_import", "is not callable"),
        ("{f}:no_args", r"must accept \(input_shape, num_classes\), its signature is \(\)"),
        ("{f}:not_a_model", "must return a keras.Model, got str"),
        ("nowhere.py:build", "cannot be imported: FileNotFoundError"),
    ],
)
def test_bad_factory_is_one_config_error(factories: Path, spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        from_factory((2,), 2, spec.format(f=factories))
    assert "\n" not in str(info.value)


def test_missing_or_broken_keras_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"must name a saved \.keras model file"):
        from_file((2,), 2, str(tmp_path / "none.keras"))
    (tmp_path / "bad.keras").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="cannot be loaded as a Keras model"):
        from_file((2,), 2, str(tmp_path / "bad.keras"))


@pytest.mark.parametrize(
    ("units", "activation", "classes", "loss", "logits"),
    [
        (1, "sigmoid", 2, keras.losses.BinaryCrossentropy, False),
        (1, None, 2, keras.losses.BinaryCrossentropy, True),
        (2, "softmax", 2, keras.losses.SparseCategoricalCrossentropy, False),
        (4, None, 4, keras.losses.SparseCategoricalCrossentropy, True),
    ],
)
def test_loss_follows_the_output(
    units: int, activation: str | None, classes: int, loss: type, logits: bool
) -> None:
    model = compile_model(dense(3, units, activation), keras.optimizers.Adam(0.05), classes)
    assert isinstance(model.loss, loss)
    assert model.loss.get_config()["from_logits"] is logits
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    history = model.fit(x, y, epochs=40, verbose=0)
    assert (
        history.history["accuracy"][-1] >= 0.95
    )  # the metric reads logits and probabilities alike


@pytest.mark.parametrize(
    ("units", "classes", "message"),
    [
        (3, 2, r"output has 3 units but the data have 2 classes: .*Dense\(1, sigmoid\)"),
        (1, 3, r"output has 1 units but the data have 3 classes: end the model with Dense\(3"),
    ],
)
def test_output_that_does_not_fit_the_labels(units: int, classes: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compile_model(dense(3, units, "softmax"), keras.optimizers.SGD(0.1), classes)


def test_input_shape_is_checked_and_compile_options_apply(tmp_path: Path, tiny_cfg) -> None:
    dense(4, 1, "sigmoid").save(tmp_path / "m4.keras")
    node = tiny_cfg("model=keras_file", f"model.path={tmp_path / 'm4.keras'}").model
    with pytest.raises(ConfigError, match=r"takes inputs of shape \(4,\) but the data rows"):
        instantiate_model(node, (20,), 2)
    dense(20, 1, "sigmoid").save(tmp_path / "m20.keras")
    cfg = tiny_cfg(
        "model=keras_file",
        f"model.path={tmp_path / 'm20.keras'}",
        "client.loss=binary_focal_crossentropy",
        "client.metrics=[auc]",
        "client.optimizer._target_=keras.optimizers.SGD",
    )
    model = model_factory(cfg, (20,), 2)()
    assert model.loss.__name__ == "binary_focal_crossentropy"
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    x = np.random.default_rng(0).normal(size=(8, 20)).astype(np.float32)
    result = model.evaluate(x, np.arange(8) % 2, verbose=0, return_dict=True)
    assert set(result) == {"loss", "accuracy", "auc"}
    bad = tiny_cfg("client.loss=no_such_loss")
    with pytest.raises(ConfigError, match=r"client\.loss"):
        model_factory(bad, (20,), 2)()
