"""A trained model with its table preprocessing in front, so the saved model takes raw rows.

The preprocessing fitted on the clients' statistics (:mod:`fedflower.aggregation.preprocessing`)
becomes Keras layers: numeric columns are filled where empty (:class:`FillMissing`), scaled
(``keras.layers.Normalization`` with the fitted mean and variance) and optionally flagged
(:class:`MissingIndicator`); each categorical column is one-hot encoded over its vocabulary
(``keras.layers.StringLookup``), an unknown or empty value counting as the most frequent one
(a fixed 0/1 ``Dense`` map). A model with categorical columns takes one input per column,
by name; a model of numeric columns only takes one float row of them in the stored order
(``features``), which its TFLite export takes too. Either way ``fedflower predict`` picks
the columns by name, so a file's column order does not matter. The label's class names and
the columns' roles are stored in the ``.keras`` archive (``fedflower.json``), read back by
:func:`read_meta`.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

META = "fedflower.json"
"""The entry of a ``.keras`` archive that holds the columns, class names and preprocessing."""


@keras.saving.register_keras_serializable(package="fedflower")
class FillMissing(keras.layers.Layer):
    """Replace NaN (an empty cell) in column ``j`` by ``fill[j]``."""

    def __init__(self, fill: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fill = [float(v) for v in fill]

    def call(self, x: Any) -> Any:
        """Filled rows."""
        fill = keras.ops.convert_to_tensor(np.asarray(self.fill, dtype="float32"))
        return keras.ops.where(keras.ops.isnan(x), fill, x)

    def get_config(self) -> dict[str, Any]:
        """Config for saving."""
        return {**super().get_config(), "fill": self.fill}


@keras.saving.register_keras_serializable(package="fedflower")
class MissingIndicator(keras.layers.Layer):
    """1.0 where column ``columns[i]`` is NaN (an empty cell), else 0.0."""

    def __init__(self, columns: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.columns = [int(c) for c in columns]

    def call(self, x: Any) -> Any:
        """The indicator columns."""
        picked = keras.ops.take(x, self.columns, axis=1)
        return keras.ops.cast(keras.ops.isnan(picked), "float32")

    def get_config(self) -> dict[str, Any]:
        """Config for saving."""
        return {**super().get_config(), "columns": self.columns}


def _numeric(
    names: Sequence[str], fitted: dict[str, Any], one_input: bool
) -> tuple[list[Any], list[Any]]:
    """Inputs of the numeric columns (one array, or one per column) and their features."""
    if not names:
        return [], []
    if one_input:  # one float row of the numeric columns in order: what TFLite takes
        inputs = [keras.Input(shape=(len(names),), name="features", dtype="float32")]
        x = inputs[0]
    else:
        inputs = [keras.Input(shape=(1,), name=name, dtype="float32") for name in names]
        x = inputs[0] if len(inputs) == 1 else keras.layers.Concatenate(axis=1)(inputs)
    filled = FillMissing(fitted["fill"], name="fill_missing")(x)
    scale = keras.layers.Normalization(
        mean=fitted["mean"], variance=fitted["variance"], name="normalize"
    )
    parts = [scale(filled)]
    if fitted["indicators"]:
        parts.append(MissingIndicator(fitted["indicators"], name="missing_indicator")(x))
    return inputs, parts


def _categorical(name: str, vocabulary: Sequence[str], mode: int) -> tuple[Any, Any]:
    """A string input one-hot encoded over ``vocabulary``, unknown/empty -> ``mode``."""
    text = keras.Input(shape=(1,), name=name, dtype="string")
    lookup = keras.layers.StringLookup(
        vocabulary=list(vocabulary), num_oov_indices=1, output_mode="one_hot", name=f"{name}_lookup"
    )
    size = len(vocabulary)
    kernel = np.zeros((size + 1, size), dtype="float32")
    kernel[0, mode] = 1.0  # the out-of-vocabulary slot: the most frequent value
    kernel[1:] = np.eye(size, dtype="float32")
    fold = keras.layers.Dense(size, use_bias=False, trainable=False, name=f"{name}_onehot")
    out = fold(lookup(text))
    fold.set_weights([kernel])
    return text, out


def with_raw_inputs(core: keras.Model, meta: dict[str, Any]) -> keras.Model:
    """``core`` behind the layers of the fitted preprocessing in ``meta``.

    ``meta`` holds ``numeric`` and ``categorical`` (column names) and ``preprocessing``
    (:meth:`fedflower.aggregation.preprocessing.Fitted.as_dict`).
    """
    fitted = meta["preprocessing"]
    inputs, parts = _numeric(meta["numeric"], fitted, one_input=not meta["categorical"])
    for name, vocabulary, mode in zip(
        meta["categorical"], fitted["vocabularies"], fitted["modes"], strict=True
    ):
        text, out = _categorical(name, vocabulary, mode)
        inputs.append(text)
        parts.append(out)
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(axis=1, name="encoded")(parts)
    if not meta["categorical"]:
        return keras.Model(inputs[0], core(x), name="raw_rows")
    return keras.Model({i.name: i for i in inputs}, core(x), name="raw_rows")


def save(model: keras.Model, path: Path, meta: dict[str, Any]) -> None:
    """Save ``model`` as ``.keras`` with ``meta`` (columns, class names) inside the archive."""
    model.save(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(META, json.dumps(meta))


def check_keras_file(path: Path) -> None:
    """Refuse in one line a file that is no ``.keras`` archive (a damaged or foreign file)."""
    from fedflower.errors import DataError

    if not zipfile.is_zipfile(path):
        raise DataError(f"{str(path)!r} is not a Keras model file (.keras); give model.keras")


def read_meta(path: Path) -> dict[str, Any] | None:
    """The columns, class names and preprocessing stored in a ``.keras`` archive, if any."""
    with zipfile.ZipFile(path) as archive:
        if META not in archive.namelist():
            return None
        return dict(json.loads(archive.read(META)))
