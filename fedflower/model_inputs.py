"""A trained model with its table preprocessing in front, so the saved model takes raw rows.

The preprocessing fitted on the clients' statistics (:mod:`fedflower.aggregation.preprocessing`)
becomes Keras layers: numeric columns are filled where empty (:class:`FillMissing`), scaled
(``keras.layers.Normalization`` with the fitted mean and variance) and optionally flagged
(:class:`MissingIndicator`); each categorical column is one-hot encoded over its vocabulary
(``keras.layers.StringLookup``), an unknown or empty value counting as the most frequent one
(a fixed 0/1 ``Dense`` map). A model with categorical columns takes one input per column,
by name; a model of numeric columns only takes one float row of them in the stored order
(``features``). For TFLite, :func:`with_numeric_row` rebuilds the front to take one float
row of the numeric columns and the categories' vocabulary indices (:class:`CodeOneHot`), so
no string lookup is needed on the device. Either way ``fedflower predict`` picks
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


@keras.saving.register_keras_serializable(package="fedflower")
class CodeOneHot(keras.layers.Layer):
    """One-hot rows of a category given as its index in the vocabulary (a float column).

    An index outside ``[0, size)`` or NaN (an empty or unknown value) counts as ``mode``, as
    the string lookup's out-of-vocabulary slot does. The TFLite export reads categories so.
    """

    def __init__(self, size: int, mode: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size, self.mode = int(size), int(mode)

    def call(self, codes: Any) -> Any:
        """The one-hot rows."""
        codes = codes[:, 0]
        valid = keras.ops.logical_and(
            keras.ops.greater_equal(codes, 0.0), keras.ops.less(codes, float(self.size))
        )
        index = keras.ops.where(valid, codes, float(self.mode))  # NaN compares False
        return keras.ops.one_hot(keras.ops.cast(index, "int32"), self.size)

    def get_config(self) -> dict[str, Any]:
        """Config for saving."""
        return {**super().get_config(), "size": self.size, "mode": self.mode}


def input_name(column: str) -> str:
    """The Keras name of ``column``'s input and layers: ``/`` written ``%2F``.

    Keras refuses ``/`` in a layer name (it separates variable paths); a column's other
    characters (spaces, unicode) are kept, so the input reads as the column.
    """
    return column.replace("/", "%2F")


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
        inputs = [keras.Input(shape=(1,), name=input_name(name), dtype="float32") for name in names]
        x = inputs[0] if len(inputs) == 1 else keras.layers.Concatenate(axis=1)(inputs)
    return inputs, _numeric_features(x, fitted)


def _numeric_features(x: Any, fitted: dict[str, Any]) -> list[Any]:
    """Fill, scale and flag the numeric columns ``x`` (a float tensor of them, in order)."""
    filled = FillMissing(fitted["fill"], name="fill_missing")(x)
    scale = keras.layers.Normalization(
        mean=fitted["mean"], variance=fitted["variance"], name="normalize"
    )
    parts = [scale(filled)]
    if fitted["indicators"]:
        parts.append(MissingIndicator(fitted["indicators"], name="missing_indicator")(x))
    return parts


def _categorical(name: str, vocabulary: Sequence[str], mode: int, j: int) -> tuple[Any, Any]:
    """A string input one-hot encoded over ``vocabulary``, unknown/empty -> ``mode``.

    The layers are named by the column's position ``j``: TensorFlow's graph scopes refuse
    the spaces and unicode a column name may hold.
    """
    text = keras.Input(shape=(1,), name=input_name(name), dtype="string")
    lookup = keras.layers.StringLookup(
        vocabulary=list(vocabulary), num_oov_indices=1, output_mode="one_hot", name=f"lookup_{j}"
    )
    size = len(vocabulary)
    kernel = np.zeros((size + 1, size), dtype="float32")
    kernel[0, mode] = 1.0  # the out-of-vocabulary slot: the most frequent value
    kernel[1:] = np.eye(size, dtype="float32")
    fold = keras.layers.Dense(size, use_bias=False, trainable=False, name=f"onehot_{j}")
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
    for j, (name, vocabulary, mode) in enumerate(
        zip(meta["categorical"], fitted["vocabularies"], fitted["modes"], strict=True)
    ):
        text, out = _categorical(name, vocabulary, mode, j)
        inputs.append(text)
        parts.append(out)
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(axis=1, name="encoded")(parts)
    if not meta["categorical"]:
        return keras.Model(inputs[0], core(x), name="raw_rows")
    return keras.Model({i.name: i for i in inputs}, core(x), name="raw_rows")


def core_of(model: keras.Model) -> keras.Model:
    """The trained model inside a raw-rows model (the layers after the preprocessing)."""
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def with_numeric_row(model: keras.Model, meta: dict[str, Any]) -> keras.Model:
    """The raw-rows ``model`` taking one float row: numeric columns, then category indices.

    Each categorical column is given as the index of its value in the stored vocabulary
    (NaN or -1: empty or unknown), so the model needs no string lookup (which LiteRT's
    built-in operators lack); :func:`numeric_rows` makes such rows.
    """
    fitted, k = meta["preprocessing"], len(meta["numeric"])
    width = k + len(meta["categorical"])
    row = keras.Input(shape=(width,), name="features", dtype="float32")
    parts = _numeric_features(row[:, :k], fitted) if k else []
    for j, (vocabulary, mode) in enumerate(
        zip(fitted["vocabularies"], fitted["modes"], strict=True)
    ):  # layer names without the column's: TensorFlow's graph names refuse spaces, unicode
        codes = row[:, k + j : k + j + 1]
        parts.append(CodeOneHot(len(vocabulary), mode, name=f"codes_{j}")(codes))
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(axis=1)(parts)
    return keras.Model(row, core_of(model)(x), name="numeric_rows")


def numeric_rows(
    meta: dict[str, Any], numeric: np.ndarray, texts: Sequence[np.ndarray]
) -> np.ndarray:
    """Rows for :func:`with_numeric_row`: numbers (NaN where empty), then vocabulary indices."""
    codes = []
    for values, vocabulary in zip(texts, meta["preprocessing"]["vocabularies"], strict=True):
        index = {v: float(i) for i, v in enumerate(vocabulary)}
        codes.append([index.get(str(v), np.nan) for v in values])
    parts = [np.asarray(numeric, dtype=np.float32).reshape(len(numeric), -1)]
    parts += [np.asarray(c, dtype=np.float32)[:, None] for c in codes]
    return np.concatenate(parts, axis=1)


def feed(meta: dict[str, Any], numeric: np.ndarray, texts: Sequence[np.ndarray]) -> Any:
    """The raw-rows model's inputs: numbers (NaN where empty) and text, by column name."""
    numeric = np.asarray(numeric, dtype=np.float32).reshape(len(numeric), -1)
    if not meta["categorical"]:  # one float row of the numeric columns, in the stored order
        return numeric
    import tensorflow as tf  # string tensors: Keras' StringLookup runs on TensorFlow

    out = {input_name(n): tf.constant(numeric[:, [j]]) for j, n in enumerate(meta["numeric"])}
    for name, values in zip(meta["categorical"], texts, strict=True):
        out[input_name(name)] = tf.constant(np.asarray(values).astype(str)[:, None])
    return out


def save(model: keras.Model, path: Path, meta: dict[str, Any]) -> None:
    """Save ``model`` as ``.keras`` with ``meta`` (columns, class names) inside the archive."""
    model.save(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(META, json.dumps(meta))


def check_keras_file(path: Path) -> None:
    """Refuse in one line a file that is no ``.keras`` archive (a damaged or foreign file)."""
    from fedflower.errors import DataError

    if not path.is_file():
        raise DataError(
            f"{str(path)!r} does not exist; give a run directory holding model.keras "
            "(output.save_model=true) or a .keras file"
        )
    if not zipfile.is_zipfile(path):
        raise DataError(f"{str(path)!r} is not a Keras model file (.keras); give model.keras")


def model_file(path: str | Path) -> Path:
    """The ``.keras`` file named, or the ``model.keras`` of the run directory named."""
    path = Path(path).expanduser()
    return path / "model.keras" if path.is_dir() else path


def load(path: str | Path) -> tuple[keras.Model, dict[str, Any] | None]:
    """A saved model and its stored table columns (``None`` for a model of feature arrays).

    ``path`` is a ``.keras`` file or a run directory holding ``model.keras``. A missing,
    damaged or foreign file is one :class:`~fedflower.errors.DataError`.
    """
    from fedflower.errors import DataError

    path = model_file(path)
    check_keras_file(path)
    meta = read_meta(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged archive
        raise DataError(f"{str(path)!r} is not a Keras model file ({exc})") from exc
    return model, meta


def read_meta(path: Path) -> dict[str, Any] | None:
    """The columns, class names and preprocessing stored in a ``.keras`` archive, if any."""
    with zipfile.ZipFile(path) as archive:
        if META not in archive.namelist():
            return None
        return dict(json.loads(archive.read(META)))
