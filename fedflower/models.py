"""Keras model factories referenced from ``conf/model/*.yaml``.

A factory takes the data's ``input_shape`` and ``num_classes`` (passed at run time) plus its
own config values and returns an uncompiled ``keras.Model``. Any importable function with that
signature can be named as ``model._target_``; a user's own model comes from a saved ``.keras``
file (:func:`from_file`, ``model=keras_file``) or a function of theirs (:func:`from_factory`,
``model=python``). :func:`compile_model` then picks the loss from the model's output (one
sigmoid unit, or one unit per class; probabilities or logits) and checks that it fits the
data.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fedflower.checks import check_choice
from fedflower.errors import ConfigError
from fedflower.model_options import TEXT_ENCODERS, check_factory

log = logging.getLogger(__name__)


def output_layer(num_classes: int) -> keras.layers.Layer:
    """One sigmoid unit for a binary task, a softmax over the classes otherwise."""
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="output")
    return keras.layers.Dense(num_classes, activation="softmax", name="output")


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    hidden_units: Sequence[int] = (128,),
    activation: str = "relu",
) -> keras.Model:
    """Multi-layer perceptron: ``Dense(h, activation)`` per hidden layer, then the output layer.

    The default is Dense(128, relu) -> Dense(1, sigmoid).
    """
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(int(units), activation=activation, name=f"hidden_{i}")(x)
    return keras.Model(inputs, output_layer(num_classes)(x), name="mlp")


def logreg(input_shape: Sequence[int], num_classes: int) -> keras.Model:
    """(Multinomial) logistic regression: the output layer alone."""
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    x = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    return keras.Model(inputs, output_layer(num_classes)(x), name="logreg")


def from_file(input_shape: Sequence[int], num_classes: int, path: str) -> keras.Model:
    """A saved Keras model (``.keras``): its architecture and its weights as the initial model.

    ``input_shape`` and ``num_classes`` are checked against the model by :func:`compile_model`.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.path must name a saved .keras model file, got {path!r}")
    try:
        return keras.models.load_model(file, compile=False)
    except Exception as exc:  # Keras raises many types for a file it cannot read
        raise ConfigError(f"model.path {path!r} cannot be loaded as a Keras model: {exc}") from exc


def _import(spec: str) -> Callable[..., Any]:
    """The callable ``module:name`` (a dotted module or a ``.py`` file) names."""
    module_name, attr = check_factory(spec)
    try:
        if module_name.endswith(".py"):
            file = Path(module_name).expanduser().resolve()
            loader = importlib.util.spec_from_file_location(file.stem, file)
            if loader is None or loader.loader is None or not file.is_file():
                raise FileNotFoundError(f"no such file {module_name!r}")
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise ConfigError(
            f"model.factory {spec!r} cannot be imported: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(factory):
        raise ConfigError(f"model.factory {spec!r} is not callable")
    return factory


def from_factory(
    input_shape: Sequence[int],
    num_classes: int,
    factory: str,
    options: Mapping[str, Any] | None = None,
) -> keras.Model:
    """The model a user's function ``build(input_shape, num_classes, **options)`` returns.

    Parameters
    ----------
    factory : str
        ``package.module:function`` (importable) or ``path/to/file.py:function``.
    options : mapping, optional
        Further keyword arguments of the function.
    """
    return built_by(
        _import(factory), f"model.factory {factory!r}", input_shape, num_classes, options
    )


def built_by(
    build: Callable[..., Any],
    what: str,
    input_shape: Sequence[int],
    num_classes: int,
    options: Mapping[str, Any] | None = None,
) -> keras.Model:
    """``build(input_shape, num_classes, **options)``, checked to accept them and return a model.

    ``what`` names the function in error messages (``model.factory 'my.py:build'``).
    """
    kwargs = dict(options or {})
    try:
        inspect.signature(build).bind(tuple(input_shape), num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"{what} must accept (input_shape, num_classes"
            f"{''.join(', ' + k for k in kwargs)}), its signature is "
            f"{inspect.signature(build)}: {exc}"
        ) from exc
    except ValueError:  # no signature (a builtin): let the call decide
        pass
    model = build(tuple(input_shape), num_classes, **kwargs)
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{what} must return a keras.Model, got {type(model).__name__}")
    return model


def from_memory(input_shape: Sequence[int], num_classes: int, key: str) -> keras.Model:
    """A model held in this Python process (``fedflower.run(model=...)``), as ``model=memory``.

    A ``keras.Model`` is copied (architecture and current weights: its weights are the initial
    global model, the object itself stays untouched); a function is called as
    ``build(input_shape, num_classes)``.
    """
    from fedflower import memory

    held = memory.get(key, "model.key")
    if not isinstance(held, keras.Model):
        return built_by(held, "the model function", input_shape, num_classes)
    try:
        copy = keras.models.clone_model(held)
    except Exception:  # a subclassed model without get_config: train the object itself
        log.debug("model %s cannot be cloned; the run trains the object itself", held.name)
        return held
    if held.built:
        copy.set_weights(held.get_weights())
    return copy


def check_inputs(model: keras.Model, input_shape: Sequence[int]) -> None:
    """Raise ``ConfigError`` unless the model takes rows of the data's ``input_shape``."""
    from fedflower.steps import ENCODER

    shape = model.input_shape
    expected = tuple(shape[1:]) if not isinstance(shape, list) else None
    if getattr(model, ENCODER, None) is not None:  # rows encoded before the model
        expected = tuple(input_shape)
    if expected is not None and expected != tuple(input_shape):
        raise ConfigError(
            f"the model takes inputs of shape {expected} but the data rows have shape "
            f"{tuple(input_shape)}: build the model for the data's features"
        )


def output_units(model: keras.Model, num_classes: int) -> int:
    """Units of the model's one output, checked against the data's classes."""
    shape = model.output_shape
    if isinstance(shape, list) or len(shape) != 2:
        raise ConfigError(f"the model must have one output of shape (batch, units), got {shape}")
    units = int(shape[-1])
    if units != num_classes and not (units == 1 and num_classes == 2):
        fits = f"Dense({num_classes}, softmax)" + (" or Dense(1, sigmoid)" * (num_classes == 2))
        raise ConfigError(
            f"the model's output has {units} units but the data have {num_classes} classes: "
            f"end the model with {fits}"
        )
    return units


def _outputs_logits(model: keras.Model) -> bool:
    """Whether the last layer outputs raw scores (linear activation) instead of probabilities."""
    activation = getattr(model.layers[-1], "activation", None) if model.layers else None
    return activation is keras.activations.linear


def compile_model(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    num_classes: int,
    steps_per_execution: int = 1,
    loss: str | None = None,
    metrics: Sequence[str] = (),
) -> keras.Model:
    """Compile ``model`` with a loss that fits its output, and an accuracy metric.

    One output unit is a binary task (binary cross-entropy), one unit per class a
    classification with integer labels (sparse categorical cross-entropy); a last layer
    without activation outputs logits. ``loss`` (a Keras loss name) replaces that choice;
    ``metrics`` (Keras metric names) are computed besides accuracy. ``steps_per_execution``
    > 1 runs that many training steps per call of the compiled train function (Keras' own
    option): much faster for tiny models with small batches; Keras on PyTorch runs one step
    per call, so there it is 1.
    """
    if keras.backend.backend() == "torch":
        steps_per_execution = 1
    units = output_units(model, num_classes)
    logits = _outputs_logits(model)
    binary = units == 1
    chosen: Any = (
        keras.losses.BinaryCrossentropy(from_logits=logits)
        if binary
        else keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
    )
    accuracy = (
        keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if logits else 0.5)
        if binary
        else keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    )
    try:
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.get(loss) if loss else chosen,
            metrics=[accuracy, *(keras.metrics.get(m) for m in metrics)],
            steps_per_execution=int(steps_per_execution),
        )
    except ValueError as exc:  # an unknown loss or metric name
        raise ConfigError(
            f"cannot compile the model (client.loss / client.metrics): {exc}"
        ) from exc
    return model


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict[str, float]:
    """Loss and metrics of ``model`` on in-memory arrays, as ``model.evaluate`` computes them.

    The model's compiled test step, fed one batch at a time (:mod:`fedflower.steps`): Keras'
    own ``evaluate`` sets up an adapter and an iterator per call, which costs more than
    evaluating a small client's rows.
    """
    from fedflower.steps import steps_of

    return steps_of(model).evaluate(x, y, batch_size)


def cnn(
    input_shape: Sequence[int],
    num_classes: int,
    filters: Sequence[int] = (16, 32),
    kernel_size: int = 3,
    dense_units: int = 64,
    dropout: float = 0.0,
) -> keras.Model:
    """Small convolutional network for images.

    One ``Conv2D(f, kernel_size, relu)`` per entry ``f`` of ``filters``, each followed by 2x2
    max-pooling while the feature map is at least 2x2, then ``Dense(dense_units, relu)``
    (with ``dropout`` when > 0) and the output layer. ``input_shape`` is
    ``(height, width, channels)``; a ``(height, width)`` shape gets one channel.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) not in (2, 3):
        raise ConfigError(f"model=cnn needs images (height, width[, channels]), got shape {shape}")
    inputs = keras.Input(shape=shape, name="features")
    x = keras.layers.Reshape((*shape, 1))(inputs) if len(shape) == 2 else inputs
    size = min(shape[:2])
    for i, n in enumerate(filters):
        conv = keras.layers.Conv2D(
            int(n), int(kernel_size), padding="same", activation="relu", name=f"conv_{i}"
        )
        x = conv(x)
        if size >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
            size //= 2
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(int(dense_units), activation="relu", name="hidden")(x)
    if dropout > 0:
        x = keras.layers.Dropout(float(dropout))(x)
    return keras.Model(inputs, output_layer(num_classes)(x), name="cnn")


STRIP = re.compile(r"""[!"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~']""")
"""The characters ``TextVectorization``'s default standardization removes (after lowering)."""


class TokenIds:
    """``TextVectorization``'s token ids of sentences, computed with NumPy and Python strings.

    Keras' defaults: lower case, punctuation stripped (:data:`STRIP`), split on whitespace;
    id 0 pads, 1 is the out-of-vocabulary token, ``vocabulary[i]`` is ``i + 2``; each
    sentence is cut or padded to ``length`` ids.
    """

    def __init__(self, vocabulary: Sequence[str], length: int) -> None:
        self.index = {token: i + 2 for i, token in enumerate(vocabulary)}
        self.length = length
        self.size = len(self.index) + 2

    def __call__(self, sentences: np.ndarray) -> np.ndarray:
        """The ``(rows, length)`` int32 ids of ``sentences`` (shape ``(rows, 1)``, str)."""
        ids = np.zeros((len(sentences), self.length), dtype=np.int32)
        for row, sentence in enumerate(np.asarray(sentences).reshape(len(sentences), -1)[:, 0]):
            found = [self.index.get(t, 1) for t in STRIP.sub("", str(sentence).lower()).split()]
            ids[row, : len(found[: self.length])] = found[: self.length]
        return ids


def _encode(embedded: keras.KerasTensor, encoder: str, units: int) -> keras.KerasTensor:
    if encoder == "pool":
        return keras.layers.GlobalAveragePooling1D(name="pool")(embedded)
    if encoder == "conv":
        conv = keras.layers.Conv1D(units, 3, padding="same", activation="relu", name="conv")
        return keras.layers.GlobalMaxPooling1D(name="pool")(conv(embedded))
    return keras.layers.LSTM(units, name="lstm")(embedded)


def text_classifier(
    input_shape: Sequence[int],
    num_classes: int,
    vocabulary: Sequence[str],
    sequence_length: int = 32,
    embedding_dim: int = 32,
    encoder: str = "conv",
    units: int = 32,
) -> keras.Model:
    """Sentence classifier: ``TextVectorization`` -> ``Embedding`` -> encoder -> hidden -> output.

    The input is one string per example (``input_shape == (1,)``). ``TextVectorization`` maps it
    to token ids with the fixed ``vocabulary`` given here, so every client and the server build
    the same lookup. The lookup table is not a weight: ``get_weights()`` holds the embedding,
    encoder, hidden and output layers only, and only those travel between server and clients.
    JAX and PyTorch have no string tensors (Keras runs ``TextVectorization`` there only in a
    ``tf.data`` pipeline): on them the model takes the ``sequence_length`` token ids and
    :class:`TokenIds` (the same ids, in NumPy) turns the sentences into them before each
    training or evaluation call (:func:`fedflower.steps.encoded`); the weights and their paths
    are the same, so clients on different backends federate one model.

    Parameters
    ----------
    vocabulary : sequence of str
        The shared vocabulary, most frequent first (without the padding and OOV tokens).
    sequence_length : int
        Tokens kept per sentence (padded or cut).
    embedding_dim : int
        Size of the word vectors.
    encoder : {"conv", "pool", "lstm"}
        A ``Conv1D`` of ``units`` filters of width 3 with global max-pooling (word-pair
        features such as "costs rose"), the average of the word vectors (masked: padding does
        not count), or an ``LSTM`` of ``units``.
    units : int
        Filters, LSTM units and units of the ``Dense(relu)`` layer before the output.
    """
    check_choice("model.encoder", encoder, TEXT_ENCODERS)
    if tuple(input_shape) != (1,):
        raise ConfigError(
            f"model=text needs one string per example, got input shape {tuple(input_shape)}"
        )
    if keras.backend.backend() == "tensorflow":
        vectorize = keras.layers.TextVectorization(
            vocabulary=list(vocabulary),
            output_sequence_length=int(sequence_length),
            name="vectorize",
        )
        inputs = keras.Input(shape=(1,), dtype="string", name="text")
        ids, size = vectorize(inputs), vectorize.vocabulary_size()
    else:  # no string tensors: the sentences are turned into the same ids before the model
        token_ids = TokenIds(tuple(vocabulary), int(sequence_length))
        inputs = keras.Input(shape=(int(sequence_length),), dtype="int32", name="text")
        ids, size = inputs, token_ids.size
    embedding = keras.layers.Embedding(
        size, int(embedding_dim), mask_zero=encoder != "conv", name="embedding"
    )
    x = _encode(embedding(ids), encoder, int(units))
    x = keras.layers.Dense(int(units), activation="relu", name="hidden")(x)
    model = keras.Model(inputs, output_layer(num_classes)(x), name="text_classifier")
    if keras.backend.backend() != "tensorflow":
        from fedflower.steps import ENCODER

        setattr(model, ENCODER, token_ids)
    return model
