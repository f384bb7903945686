"""The ``backend`` option: the Keras backend a process trains on (TensorFlow, JAX, PyTorch).

Keras 3 picks its backend once, when it is first imported: from ``KERAS_BACKEND``, else
``~/.keras/keras.json``, else TensorFlow. ``backend=<name>`` sets ``KERAS_BACKEND`` before
that import, so the ``fedflower`` command, :func:`fedflower.run` in a fresh kernel and worker
processes all train on it; the option's default reads ``KERAS_BACKEND`` (``conf/config.yaml``).
A process whose Keras already runs on another backend cannot switch: that is one error line.

This module is the one place that knows the backend: which one a process runs
(:func:`keras_backend`), choosing it (:func:`use_backend`), and what differs per backend at
start-up (threads, TensorFlow's import). It imports neither Keras nor any backend itself.
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


def _keras_imported() -> bool:
    """Whether Keras is imported (and so runs on its backend for good) in this process."""
    return hasattr(sys.modules.get("keras"), "backend")


def keras_backend() -> str:
    """The Keras backend of this process, read without importing Keras when it is not yet.

    Keras' own order: ``KERAS_BACKEND``, else the ``backend`` of ``$KERAS_HOME/keras.json``
    (``~/.keras/keras.json``), else ``tensorflow``.
    """
    if _keras_imported():
        return str(sys.modules["keras"].backend.backend())
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name
    import json
    from pathlib import Path

    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    try:
        return str(json.loads((home / "keras.json").read_text()).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def limit_threads(threads: int) -> None:
    """Limit the backend's CPU threads to ``threads`` in this process (``0``: its default).

    TensorFlow's intra/inter-op pools (only before its first op), PyTorch's intra-op threads;
    JAX reads its thread settings from ``XLA_FLAGS`` when it starts, so nothing is changed.
    """
    import logging

    if threads <= 0:
        return
    backend = keras_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            logging.getLogger(__name__).debug("TensorFlow already initialized; threads unchanged")
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)


def quiet_tensorflow_import(if_installed: bool = False) -> None:
    """Import TensorFlow with its C++ start-up banner (oneDNN, absl) sent to /dev/null.

    Only when Keras runs on TensorFlow: a JAX or PyTorch process (a SuperNode installed with
    ``fedflower[client-jax]``, which has no TensorFlow) imports none. ``if_installed``: on
    any backend where TensorFlow is installed (``keras.utils.set_random_seed`` imports it
    to seed it too).
    """
    if "tensorflow" in sys.modules:
        return
    if if_installed:
        import importlib.util

        if importlib.util.find_spec("tensorflow") is None:
            return
    elif keras_backend() != "tensorflow":
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


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
    if _keras_imported():
        current = keras_backend()
        if current != wanted:
            raise ConfigError(
                f"backend must be the backend Keras already runs on in this process "
                f"({current}), got {wanted!r}; start a new process (or kernel) for {wanted}"
            )
        return
    os.environ["KERAS_BACKEND"] = wanted
