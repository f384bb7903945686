"""The ``backend`` option: the Keras backend a process trains on (TensorFlow, JAX, PyTorch).

Keras 3 picks its backend once, when it is first imported: from ``KERAS_BACKEND``, else
``~/.keras/keras.json``, else TensorFlow. ``backend=<name>`` sets ``KERAS_BACKEND`` before
that import, so the ``fedflower`` command, :func:`fedflower.run` in a fresh kernel and worker
processes all train on it; the option's default reads ``KERAS_BACKEND`` (``conf/config.yaml``).
A process whose Keras already runs on another backend cannot switch: that is one error line.
"""

from __future__ import annotations

import os
import sys

from fedflower.errors import ConfigError

BACKENDS = ("tensorflow", "jax", "torch")
"""The Keras backends fedflower trains on."""


def check_backend(name: object) -> str:
    """``name`` if it is a backend fedflower trains on, else a :class:`ConfigError`."""
    if name not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return str(name)


def use_backend(name: object) -> None:
    """Make ``name`` this process's Keras backend (before Keras is imported).

    Raises
    ------
    ConfigError
        ``name`` is no backend fedflower trains on, or Keras is already imported on another
        backend in this process (a notebook kernel that ran Keras: restart it, or set
        ``KERAS_BACKEND`` before the first import).
    """
    wanted = check_backend(name)
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        current = keras.backend.backend()
        if current != wanted:
            raise ConfigError(
                f"backend must be the backend Keras already runs on in this process "
                f"({current}), got {wanted!r}; start a new process (or kernel) for {wanted}"
            )
        return
    os.environ["KERAS_BACKEND"] = wanted
