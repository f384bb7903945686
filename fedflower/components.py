"""What every process that trains needs, with light imports: TensorFlow threads, the model.

The simulation (:mod:`fedflower.experiment`) and a deployed SuperNode
(:mod:`fedflower.deploy.app`) both build their model and limit TensorFlow's threads with
these functions. Only Keras, TensorFlow and Hydra are imported, so a slim SuperNode install
(no simulation, dataset or plotting packages) can use them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def instantiate_data(node: Any, what: str) -> Any:
    """Instantiate a dataset or partition config; any failure becomes a one-line ``DataError``.

    Hydra wraps a target's exceptions in ``InstantiationException``; a ``DataError`` raised by
    the target itself is passed on unchanged.
    """
    from hydra.utils import instantiate

    from fedflower.errors import DataError

    try:
        return instantiate(node)
    except DataError:
        raise
    except Exception as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, DataError):
            raise cause from None
        raise DataError(f"cannot build the {what}: {cause}") from exc


def configure_threads(threads: int) -> None:
    """Limit TensorFlow's thread pools (only possible before TensorFlow first runs an op)."""
    import tensorflow as tf

    if threads <= 0:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        log.debug("TensorFlow already initialized; thread settings unchanged")


def model_factory(cfg: Any, input_shape: tuple[int, ...], num_classes: int) -> Callable[[], Any]:
    """A function that builds and compiles the model ``cfg`` describes for this data shape."""
    from hydra.utils import instantiate

    from fedflower.errors import FedflowerError
    from fedflower.models import compile_model

    def build_model() -> Any:
        try:
            model = instantiate(cfg.model, input_shape=input_shape, num_classes=num_classes)
        except Exception as exc:
            if isinstance(exc.__cause__, FedflowerError):  # e.g. model=cnn on tabular data
                raise exc.__cause__ from None
            raise
        optimizer = instantiate(cfg.client.optimizer, learning_rate=cfg.client.learning_rate)
        steps = cfg.client.get("steps_per_execution", 1)
        return compile_model(model, optimizer, num_classes, steps_per_execution=steps)

    return build_model
