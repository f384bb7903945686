"""Seeding: one place that decides how randomness is derived from the run's seed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 32-bit seed derived from integers (e.g. run seed, round, client id)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras, and ask TensorFlow for deterministic ops."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@contextmanager
def keras_seed(seed: int) -> Iterator[None]:
    """Seed Keras/TensorFlow for one local training call, leaving Python's and NumPy's RNGs as
    they were (the server samples clients with Python's ``random`` in the same process).
    """
    import keras

    py_state, np_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
