"""Training only some of a model's weights: FedRep's alternating head and body epochs.

Collins et al., "Exploiting Shared Representations for Personalized Federated Learning",
ICML 2021, arXiv:2102.07078, train the head with the body fixed, then the body with the
head fixed. Keras trains ``model.trainable_weights``, read when the train step is traced, so
the frozen weights' variables are marked not trainable for the block and the compiled steps
of each frozen set are kept apart (:func:`fedflower.steps.steps_of` keys them by the
trainable variables): each set is traced once per process. On JAX a frozen set also trains
with its own optimizer, built for exactly its variables (Keras' stateless update pairs
gradients with the variables an optimizer was built with).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import keras

from fedflower.steps import FROZEN


@contextmanager
def frozen(model: keras.Model, paths: Sequence[str] | None) -> Iterator[None]:
    """Train inside this block without changing the weights named ``paths`` (variable paths).

    Nothing happens for an empty or missing ``paths``.
    """
    fixed = set(paths or ())
    optimizer = model.optimizer
    if fixed and optimizer is not None and not optimizer.built:  # knows every variable
        optimizer.build(model.trainable_variables)
    chosen = [v for v in model.weights if v.trainable and str(v.path) in fixed]
    for variable in chosen:
        variable.trainable = False
    setattr(model, FROZEN, tuple(str(v.path) for v in chosen))  # steps: not the whole model
    try:
        yield
    finally:
        setattr(model, FROZEN, ())
        for variable in chosen:
            variable.trainable = True
