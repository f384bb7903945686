"""A NumPyClient-shaped client around a compiled Keras model and one client's local data.

This is fedflower's client-side extension point: subclass it and override ``fit`` or
``evaluate``. :mod:`fedflower.client.app` adapts it to Flower's Message API in one place.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from flwr.app import ArrayRecord

from fedflower import keys, wire
from fedflower.client.dynamic import linear_term
from fedflower.client.frozen import frozen
from fedflower.client.proximal import proximal
from fedflower.data.source import ClientData
from fedflower.determinism import derive_seed
from fedflower.models import evaluate
from fedflower.steps import batch_order, steps_of

Config = dict[str, Any]


def reset_optimizer(optimizer: keras.optimizers.Optimizer, learning_rate: float | None) -> None:
    """Zero the optimizer's state (moments, step count) and set its learning rate.

    Local training starts from fresh optimizer state every round, as in FedAvg; resetting
    the variables instead of recompiling keeps Keras' compiled train function.
    """
    lr_var = getattr(optimizer, "_learning_rate", None)
    for var in optimizer.variables:
        if var is not lr_var:
            var.assign(np.zeros(var.shape, dtype=var.dtype))
    if learning_rate is not None:
        optimizer.learning_rate = float(learning_rate)


class KerasClient:
    """Train and evaluate a Keras model on one client's data.

    Parameters
    ----------
    model : keras.Model
        A compiled model. It may be shared by all clients of one worker process: every call
        sets the weights it is given first.
    data : ClientData
        The client's local training and validation data.
    cid : int
        The client's id (its partition id), used to derive its seeds.
    seed : int
        The run's seed.
    """

    def __init__(self, model: keras.Model, data: ClientData, cid: int = 0, seed: int = 0) -> None:
        self.model = model
        self.data = data
        self.cid = cid
        self.seed = seed

    def receive(self, record: ArrayRecord, what: str = "the received model") -> list[np.ndarray]:
        """A received model's arrays in this model's variable order, matched by variable path.

        Raises :class:`~fedflower.errors.ModelMismatch` naming the first variable that is
        missing, extra or of another shape.
        """
        variables = self.model.weights
        names = wire.variable_names(self.model)
        return wire.arrays_for(record, names, [tuple(v.shape) for v in variables], what)

    def send(self, arrays: list[np.ndarray], received: ArrayRecord) -> ArrayRecord:
        """``arrays`` (in this model's variable order) keyed as ``received`` is, in its order."""
        return wire.reordered(received, wire.variable_names(self.model), arrays)

    def get_parameters(self, config: Config) -> list[np.ndarray]:
        """Return the model's weights."""
        return [np.asarray(w) for w in self.model.get_weights()]

    def set_parameters(self, parameters: list[np.ndarray]) -> None:
        """Load weights into the model (one compiled call, :mod:`fedflower.steps`)."""
        steps_of(self.model).set_weights(parameters)

    def flipped_labels(self) -> np.ndarray:
        """Training labels ``y -> C - 1 - y`` (the ``label_flip`` attack; C from the model)."""
        num_classes = max(2, int(self.model.output_shape[-1]))
        return (num_classes - 1 - self.data.y_train).astype(self.data.y_train.dtype)

    def train_batches(self, epochs: int, seed: int) -> list[np.ndarray]:
        """The row order of each local epoch, fixed by ``seed`` alone.

        A NumPy permutation, not TensorFlow's global random state: a client's batches depend
        only on the run's seed, the round and the client id, on every engine and in every
        process.
        """
        return batch_order(self.data.num_train, epochs, seed)

    def fit(
        self,
        parameters: list[np.ndarray],
        config: Config,
        start: list[np.ndarray] | None = None,
        linear: list[np.ndarray] | None = None,
    ) -> tuple[list[np.ndarray], int, dict[str, float]]:
        """Train locally from ``parameters`` with the round's settings.

        ``config`` carries ``local-epochs``, ``batch-size`` and ``lr`` (see :mod:`fedflower.keys`),
        and ``proximal-mu`` for FedProx (``attack-flip-labels``: train on flipped labels).
        ``start`` (Ditto's personal model) is trained instead of ``parameters``, which stay
        the proximal term's anchor; ``linear`` (FedDyn's ``g_i``) adds ``-<linear, w>`` to
        the loss; ``frozen`` in ``config`` lists weights (by variable path) left unchanged.
        Returns the new weights, the number of training examples
        and the training metrics of the last local epoch. Training runs the model's compiled
        steps (:mod:`fedflower.steps`).
        """
        self.set_parameters(parameters)
        rnd = int(config.get(keys.SERVER_ROUND, 0))
        flip = bool(config.get(keys.FLIP_LABELS, False))
        y = self.flipped_labels() if flip else self.data.y_train
        orders = self.train_batches(
            int(config.get(keys.LOCAL_EPOCHS, 1)), derive_seed(self.seed, rnd, self.cid)
        )
        # FedProx: mu/2 * ||w - w_global||^2 joins the loss while mu > 0 (see client.proximal).
        mu = float(config.get(keys.PROXIMAL_MU, 0.0))
        fixed = config.get(keys.FROZEN)  # FedRep: the head, then the body, stays fixed
        with proximal(self.model, mu), linear_term(self.model, linear), frozen(self.model, fixed):
            steps_of(self.model).reset_optimizer(config.get(keys.LEARNING_RATE))  # this set's
            if start is not None:
                self.set_parameters(start)
            logs = steps_of(self.model).fit(  # a term may have just been attached
                self.data.x_train, y, int(config.get(keys.BATCH_SIZE, 32)), orders
            )
        metrics = {
            keys.TRAIN_LOSS: float(logs["loss"]),
            keys.TRAIN_ACCURACY: float(logs["accuracy"]),
        }
        return self.get_parameters(config), self.data.num_train, metrics

    def evaluate(
        self, parameters: list[np.ndarray], config: Config
    ) -> tuple[float, int, dict[str, float]]:
        """Evaluate ``parameters`` on the local validation split (the training split if empty).

        Returns the loss, the number of examples and ``eval_<metric>`` for accuracy and every
        metric the model is compiled with (``client.metrics``).
        """
        self.set_parameters(parameters)
        x, y = self.data.x_val, self.data.y_val
        if len(y) == 0:
            x, y = self.data.x_train, self.data.y_train
        result = evaluate(self.model, x, y, int(config.get(keys.BATCH_SIZE, 256)))
        metrics = {f"eval_{k}": float(v) for k, v in result.items() if k != "loss"}
        return float(result["loss"]), len(y), metrics
