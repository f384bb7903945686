"""fedflower.wire: models travel keyed by Keras variable path, matched by name on arrival."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedflower.errors import ConfigError, ModelMismatch
from fedflower.models import mlp
from fedflower.wire import (
    arrays_for,
    model_record,
    named_record,
    reordered,
    to_numpy,
    variable_names,
)

NAMES = ["hidden_0/kernel", "hidden_0/bias", "output/kernel", "output/bias"]


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return mlp((3,), num_classes=2, hidden_units=(4,))


def test_a_model_travels_keyed_by_its_variable_paths(model: keras.Model) -> None:
    record = model_record(model)
    assert list(record.keys()) == variable_names(model) == NAMES
    for got, want in zip(record.to_numpy_ndarrays(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_arrays_are_matched_by_name_whatever_their_order(model: keras.Model) -> None:
    weights = [np.full(w.shape, i, np.float32) for i, w in enumerate(model.get_weights())]
    backwards = named_record(NAMES[::-1], weights[::-1])
    got = arrays_for(backwards, NAMES, [w.shape for w in weights])
    assert [float(a.flat[0]) for a in got] == [0.0, 1.0, 2.0, 3.0]
    reply = reordered(backwards, NAMES, got)  # a reply keeps the sender's order
    assert list(reply.keys()) == NAMES[::-1]
    assert [float(a.flat[0]) for a in reply.to_numpy_ndarrays()] == [3.0, 2.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("output/bias"), r"variable 'output/bias' is missing"),
        (
            lambda r: r.__setitem__("head/bias", Array(np.zeros(1, np.float32))),
            r"variable 'head/bias' is not in this model",
        ),
        (
            lambda r: r.__setitem__("hidden_0/bias", Array(np.zeros(5, np.float32))),
            r"variable 'hidden_0/bias' has shape \(5,\), this model's has \(4,\)",
        ),
    ],
)
def test_a_mismatch_names_the_first_differing_variable(
    model: keras.Model, change: object, message: str
) -> None:
    record = model_record(model)
    change(record)  # type: ignore[operator]
    shapes = [tuple(v.shape) for v in model.weights]
    with pytest.raises(
        ModelMismatch, match=f"^the received model does not fit this model: {message}"
    ):
        arrays_for(record, NAMES, shapes)


def test_positional_keys_are_refused_naming_the_first_variable(model: keras.Model) -> None:
    record = ArrayRecord(model.get_weights())  # keys "0", "1", ...
    with pytest.raises(
        ModelMismatch, match=r"variable 'hidden_0/kernel' is missing \(received '0'"
    ):
        arrays_for(record, NAMES)


class Twin(keras.layers.Layer):
    """Two sublayers of one name: their variables share a path."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(2, name="d")
        self.second = keras.layers.Dense(2, name="d")

    def call(self, x: object) -> object:
        return self.second(self.first(x))


def test_duplicate_variable_paths_are_a_config_error() -> None:
    inputs = keras.Input((2,))
    model = keras.Model(inputs, Twin(name="twin")(inputs))
    with pytest.raises(ConfigError, match="got 'twin/d/kernel' twice; give the layers distinct"):
        variable_names(model)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4)),
        np.array(2.5, dtype=np.float32),
        np.zeros((0, 3), dtype=np.int64),
        np.arange(6, dtype=">f8"),
        np.array(["a", "bc"]),
        np.array([b"a", b"bc"]),
        np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
        np.zeros((2, 3), dtype=np.dtype((np.float32, (2,)))),
    ],
)
def test_to_numpy_gives_what_flower_gives(array: np.ndarray) -> None:
    """The same values, dtype, shape and memory order as ``Array.numpy()``, writable, read
    twice (the second time from the parsed header kept)."""
    for _ in range(2):
        got, want = to_numpy(Array(array)), Array(array).numpy()
        assert (got.dtype, got.shape) == (want.dtype, want.shape)
        assert got.flags.c_contiguous == want.flags.c_contiguous
        assert got.flags.f_contiguous == want.flags.f_contiguous
        assert got.flags.writeable
        np.testing.assert_array_equal(got, want)


def test_to_numpy_hands_other_serializations_to_flower() -> None:
    other = Array(dtype="float32", shape=(2,), stype="torch.Tensor", data=b"\x00" * 8)
    with pytest.raises(TypeError, match="Unsupported serialization type"):
        to_numpy(other)
