"""What every process that trains needs, with light imports: backend threads, the model.

The simulation (:mod:`fedflower.experiment`) and a deployed SuperNode
(:mod:`fedflower.deploy.app`) both build their model and limit the Keras backend's threads
with these functions. Only Keras, its backend and Hydra are imported, so a slim SuperNode
install (no simulation, dataset or plotting packages; no TensorFlow on JAX or PyTorch) can
use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _instantiate(node: Any, error: type[Exception], what: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; any failure becomes one line of type ``error``.

    Hydra wraps a target's exceptions in ``InstantiationException``; a ``FedflowerError``
    raised by the target itself is passed on unchanged.
    """
    from hydra.utils import instantiate

    from fedflower.errors import FedflowerError

    try:
        return instantiate(node, **kwargs)
    except FedflowerError:
        raise
    except Exception as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, FedflowerError):
            raise cause from None
        raise error(f"cannot build the {what}: {cause}") from exc


def instantiate_data(node: Any, what: str) -> Any:
    """Instantiate a dataset or partition config; any failure becomes a one-line ``DataError``."""
    from fedflower.errors import DataError

    return _instantiate(node, DataError, what)


def configure_threads(threads: int) -> None:
    """Limit the Keras backend's threads (TensorFlow: only before it first runs an op)."""
    from fedflower.backend import limit_threads

    limit_threads(threads)


def instantiate_model(node: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Instantiate a model config for the data; any failure becomes a one-line ``ConfigError``.

    The model must take rows of ``input_shape``; its output is checked when it is compiled.
    """
    from fedflower.errors import ConfigError
    from fedflower.models import check_inputs

    model = _instantiate(
        node, ConfigError, "model", input_shape=input_shape, num_classes=num_classes
    )
    check_inputs(model, input_shape)
    return model


def model_factory(cfg: Any, input_shape: tuple[int, ...], num_classes: int) -> Callable[[], Any]:
    """A function that builds and compiles the model ``cfg`` describes for this data shape.

    ``cfg.client`` holds the compile options: ``optimizer`` (and ``learning_rate``), ``loss``
    (``null``: the one the model's output calls for) and extra ``metrics``. Building the first
    model in a process limits TensorFlow to ``cfg.simulation.tf_threads`` threads (Ray workers).
    """
    from hydra.utils import instantiate

    from fedflower.models import compile_model

    def build_model() -> Any:
        # first in a worker process (simulation=ray): its TensorFlow gets the configured threads
        configure_threads(int((cfg.get("simulation") or {}).get("tf_threads", 0)))
        model = instantiate_model(cfg.model, input_shape, num_classes)
        optimizer = instantiate(cfg.client.optimizer, learning_rate=cfg.client.learning_rate)
        return compile_model(
            model,
            optimizer,
            num_classes,
            steps_per_execution=cfg.client.get("steps_per_execution", 1),
            loss=cfg.client.get("loss"),
            metrics=list(cfg.client.get("metrics") or []),
        )

    return build_model
