"""Keras model factories referenced from ``conf/model/*.yaml``.

A factory takes the data's ``input_shape`` and ``num_classes`` (passed at run time) plus its
own config values and returns an uncompiled ``keras.Model``. Any importable function with that
signature can be named as ``model._target_``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from fedflower.checks import check_choice
from fedflower.errors import ConfigError


def output_layer(num_classes: int) -> keras.layers.Layer:
    """One sigmoid unit for a binary task, a softmax over the classes otherwise."""
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="output")
    return keras.layers.Dense(num_classes, activation="softmax", name="output")


def loss_for(num_classes: int) -> keras.losses.Loss:
    """Loss matching :func:`output_layer`: the outputs are probabilities, not logits."""
    if num_classes == 2:
        return keras.losses.BinaryCrossentropy(from_logits=False)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=False)


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    hidden_units: Sequence[int] = (128,),
    activation: str = "relu",
) -> keras.Model:
    """Multi-layer perceptron: ``Dense(h, activation)`` per hidden layer, then the output layer.

    The default is the seed's model: Dense(128, relu) -> Dense(1, sigmoid).
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


def compile_model(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    num_classes: int,
    steps_per_execution: int = 1,
) -> keras.Model:
    """Compile ``model`` with the task's loss and an accuracy metric.

    ``steps_per_execution`` > 1 runs that many training steps per call of the compiled train
    function (Keras' own option): much faster for tiny models with small batches.
    """
    model.compile(
        optimizer=optimizer,
        loss=loss_for(num_classes),
        metrics=["accuracy"],
        steps_per_execution=int(steps_per_execution),
    )
    return model


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict[str, float]:
    """``model.evaluate`` on in-memory arrays, fed as a ``tf.data`` pipeline.

    Keras' own array adapter costs about as much per call as evaluating a few thousand rows;
    a plain sliced dataset avoids it.
    """
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    result = model.evaluate(data, verbose=0, return_dict=True)
    return {k: float(v) for k, v in result.items()}


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


TEXT_ENCODERS = ("pool", "conv", "lstm")
"""How :func:`text_classifier` turns word vectors into one sentence vector."""


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
    vectorize = keras.layers.TextVectorization(
        vocabulary=list(vocabulary), output_sequence_length=int(sequence_length), name="vectorize"
    )
    inputs = keras.Input(shape=(1,), dtype="string", name="text")
    embedding = keras.layers.Embedding(
        vectorize.vocabulary_size(),
        int(embedding_dim),
        mask_zero=encoder != "conv",
        name="embedding",
    )
    x = _encode(embedding(vectorize(inputs)), encoder, int(units))
    x = keras.layers.Dense(int(units), activation="relu", name="hidden")(x)
    return keras.Model(inputs, output_layer(num_classes)(x), name="text_classifier")
