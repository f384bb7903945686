"""FedProx's proximal term as part of a Keras model's own training objective.

Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020, arXiv:1812.06127:
client ``k`` approximately minimizes ``h_k(w) = F_k(w) + mu/2 * ||w - w_global||^2``.

Keras adds the penalties of its variables' ``regularizer`` to the loss in every train step
(``Model.losses``), so the term is attached as a regularizer of each trainable variable:
``mu/2 * ||v - anchor_v||^2`` with ``mu`` and the anchors held in non-trainable variables. A
round only assigns new values to them, so the model's compiled train function is traced once
(when the term is first attached) and reused by every client and round afterwards. Between
local trainings ``mu`` is 0, so evaluation losses do not include the term.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
from keras import ops

from fedflower.errors import ConfigError

_ATTR = "_fedflower_proximal"


class ProximalPenalty(keras.regularizers.Regularizer):
    """``mu/2 * ||x - anchor||^2`` (plus the variable's previous regularizer, if any)."""

    def __init__(self, mu: keras.Variable, anchor: keras.Variable, previous: Any = None) -> None:
        self.mu = mu
        self.anchor = anchor
        self.previous = previous

    def __call__(self, x: Any) -> Any:
        """The penalty of the variable value ``x``."""
        diff = ops.subtract(x, self.anchor)
        mu = ops.cast(self.mu, diff.dtype)
        penalty = 0.5 * mu * ops.sum(ops.square(diff))
        if self.previous is not None:
            penalty = penalty + self.previous(x)
        return penalty

    def get_config(self) -> dict[str, Any]:
        """Not serializable: the anchors are run-time state."""
        raise NotImplementedError("the proximal penalty is run-time state and is not saved")


class ProximalTerm:
    """The proximal term attached to one model's trainable variables.

    Parameters
    ----------
    model : keras.Model
        A built, compiled model. Its train function is reset once so the next ``fit`` traces
        it with the term.
    """

    def __init__(self, model: keras.Model) -> None:
        self.mu = keras.Variable(0.0, dtype="float32", trainable=False, name="proximal_mu")
        self.pairs: list[tuple[Any, keras.Variable]] = []
        for var in model.trainable_weights:
            anchor = keras.Variable(
                np.zeros(var.shape, dtype=var.dtype), trainable=False, name="proximal_anchor"
            )
            var.regularizer = ProximalPenalty(self.mu, anchor, var.regularizer)
            self.pairs.append((var, anchor))
        model.train_function = None

    def start(self, mu: float) -> None:
        """Anchor the term at the variables' current values (the global model) with weight mu."""
        for var, anchor in self.pairs:
            anchor.assign(var.value)
        self.mu.assign(mu)

    def stop(self) -> None:
        """Switch the term off (``mu = 0``); it then adds exactly zero to loss and gradients."""
        self.mu.assign(0.0)


def attached(model: keras.Model) -> ProximalTerm | None:
    """The proximal term attached to ``model``, if any."""
    return getattr(model, _ATTR, None)


@contextmanager
def proximal(model: keras.Model, mu: float) -> Iterator[ProximalTerm | None]:
    """Train ``model`` inside this block with ``mu/2 * ||w - w_now||^2`` added to its loss.

    ``w_now`` are the model's weights when the block starts (set the global weights first).
    With ``mu == 0`` on a model without the term nothing happens, so FedAvg clients never
    retrace; once attached the term stays (with ``mu = 0`` outside the block).

    Raises
    ------
    ConfigError
        If ``mu`` is negative or not finite.
    """
    mu = float(mu)
    if not np.isfinite(mu) or mu < 0:
        raise ConfigError(f"proximal-mu must be a finite number >= 0, got {mu!r}")
    term = attached(model)
    if term is None and mu > 0:
        term = ProximalTerm(model)
        setattr(model, _ATTR, term)
    if term is None:
        yield None
        return
    term.start(mu)
    try:
        yield term
    finally:
        term.stop()
