"""Keras model factories referenced from ``conf/model/*.yaml``.

A factory takes the data's ``input_shape`` and ``num_classes`` (passed at run time) plus its
own config values and returns an uncompiled ``keras.Model``. Any importable function with that
signature can be named as ``model._target_``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np


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
