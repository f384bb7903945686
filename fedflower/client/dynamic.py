"""FedDyn's client side: a linear term in the local objective and its state in Context.state.

Acar et al., "Federated Learning Based on Dynamic Regularization", ICLR 2021,
arXiv:2111.04263, Algorithm 1. Client ``i`` minimizes

    L_i(theta) - <g_i, theta> + alpha/2 ||theta - theta_global||^2

and then updates ``g_i <- g_i - alpha (theta_i - theta_global)`` (``g_i`` starts at 0; it is
the gradient of ``L_i`` at the client's last model). The quadratic term is FedProx's
(:mod:`fedflower.client.proximal`, with ``mu = alpha``); the linear term is a regularizer on
each trainable variable, attached on first use like the proximal term. ``g_i`` lives in the
node's ``Context.state`` between the rounds it is sampled in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
from flwr.app import Context, Message, MessageType
from keras import ops

from fedflower import keys
from fedflower.client.personalization import CallNext
from fedflower.wire import named_record

_ATTR = "_fedflower_linear"


class LinearPenalty(keras.regularizers.Regularizer):
    """``-<coefficient, x>`` (plus the variable's previous regularizer, if any)."""

    def __init__(self, coefficient: keras.Variable, previous: Any = None) -> None:
        self.coefficient = coefficient
        self.previous = previous

    def __call__(self, x: Any) -> Any:
        """The penalty of the variable value ``x``."""
        penalty = -ops.sum(ops.multiply(x, ops.cast(self.coefficient, x.dtype)))
        return penalty if self.previous is None else penalty + self.previous(x)

    def get_config(self) -> dict[str, Any]:
        """Not serializable: the coefficients are run-time state."""
        raise NotImplementedError("the linear term is run-time state and is not saved")


class LinearTerm:
    """The linear term attached to one model's trainable variables (zero when unused)."""

    def __init__(self, model: keras.Model) -> None:
        position = {id(w): i for i, w in enumerate(model.weights)}
        self.pairs: list[tuple[int, keras.Variable]] = []
        for var in model.trainable_weights:
            coefficient = keras.Variable(
                np.zeros(var.shape, dtype=var.dtype), trainable=False, name="linear_coefficient"
            )
            var.regularizer = LinearPenalty(coefficient, var.regularizer)
            self.pairs.append((position[id(var)], coefficient))
        model.train_function = None

    def assign(self, coefficients: Sequence[np.ndarray] | None) -> None:
        """Set the coefficients (by position in ``model.get_weights()``); ``None``: zero."""
        for i, coefficient in self.pairs:
            value = np.zeros(coefficient.shape) if coefficients is None else coefficients[i]
            coefficient.assign(np.asarray(value, dtype=coefficient.dtype))


@contextmanager
def linear_term(model: keras.Model, coefficients: Sequence[np.ndarray] | None) -> Iterator[None]:
    """Train inside this block with ``-<coefficients, w>`` added to the loss (none: nothing)."""
    term: LinearTerm | None = getattr(model, _ATTR, None)
    if term is None and coefficients is None:
        yield
        return
    if term is None:
        term = LinearTerm(model)
        setattr(model, _ATTR, term)
    term.assign(coefficients)
    try:
        yield
    finally:
        term.assign(None)


def feddyn_mod(msg: Message, context: Context, call_next: CallNext) -> Message:
    """Give a FedDyn train task the node's ``g_i`` and update it from the trained model.

    Does nothing unless the server's train config carries ``feddyn-alpha``.
    """
    config = msg.content.config_records.get(keys.CONFIG)
    alpha = None if config is None else config.get(keys.FEDDYN_ALPHA)
    if alpha is None or not msg.metadata.message_type.startswith(MessageType.TRAIN):
        return call_next(msg, context)
    record = msg.content.array_records[keys.ARRAYS]
    names, received = list(record.keys()), record.to_numpy_ndarrays()
    kept = context.state.array_records.get(keys.FEDDYN_STATE)
    g = [np.zeros_like(a) for a in received] if kept is None else kept.to_numpy_ndarrays()
    msg.content[keys.LINEAR] = named_record(names, g)  # keyed as the model is
    reply = call_next(msg, context)
    if not reply.has_error():
        trained = reply.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
        step = float(alpha)  # type: ignore[arg-type]
        g = [gi - step * (t - r) for gi, t, r in zip(g, trained, received, strict=True)]
        context.state[keys.FEDDYN_STATE] = named_record(names, g)
    return reply
