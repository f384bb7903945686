"""Training and evaluation steps compiled once per model and process, fed NumPy batches.

``keras.Model.fit`` and ``evaluate`` set up a data adapter, a ``tf.data`` iterator, callbacks
and a progress logger on every call, and ``fit`` dispatches one compiled call per batch; for
the small models and local datasets of federated simulation that set-up costs more than the
training itself. Here the model's own ``train_step``/``test_step`` (so its loss, metrics,
optimizer and regularizers, FedProx's term included, are Keras') run inside functions built
once per model and reused by every client and round of the process:

* training: up to ``steps_per_execution`` (the model's compile option) full batches per call
  in one compiled loop (XLA when the model allows it), padded to that many batches so every
  client of every round shares one compiled shape, then the last partial batch, as Keras
  would order them;
* evaluation: one call per batch, no iterator.

Batches come from a NumPy permutation seeded by the caller (:func:`batch_order`), so a
client's batches depend only on (seed, round, client), whatever engine or process runs it.
The steps are Keras' own; only their compilation is backend-specific: ``tf.function`` on
TensorFlow; on JAX, Keras' stateless ``train_step(state, data)`` jitted once
(:class:`_JaxSteps`, as Keras' JAX trainer builds its train function) with the state carried
from batch to batch as arrays; on PyTorch the model's ``train_step`` one batch at a time.
Evaluation on JAX and PyTorch is Keras' own ``Model.evaluate``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

log = logging.getLogger(__name__)

_ATTR = "_fedflower_steps"
BUFFER_BYTES = 1 << 26
"""At most this many bytes of padded input per training call (64 MiB): fewer batches per call
for large batches or rows."""

Logs = dict[str, float]


def batch_order(n: int, epochs: int, seed: int) -> list[np.ndarray]:
    """One permutation of ``range(n)`` per epoch, from NumPy's generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(epochs)]


def _compile(fn: Callable[..., Any], jit: bool) -> Callable[..., Any]:
    """``fn`` compiled by the backend (TensorFlow: a ``tf.function``), or ``fn`` itself."""
    if keras.backend.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    return tf.function(fn, jit_compile=jit, reduce_retracing=True)


class _AnyRows:
    """``fn(x, y)`` compiled once for any number of rows (per dtype and row shape).

    A function traced for one batch's exact shape and later relaxed to any shape computes in
    float32 slightly differently (kernels chosen per shape), and which happens would depend on
    the order in which a process met the shapes: on which clients a worker ran before. One
    graph with an unknown row count from the first call makes the result independent of it.
    """

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        self.fn = fn
        self._compiled: dict[tuple[Any, ...], Callable[[Any, Any], Any]] = {}

    def __call__(self, x: np.ndarray, y: np.ndarray) -> Any:
        if keras.backend.backend() != "tensorflow":
            return self.fn(x, y)
        key = (x.dtype.str, x.shape[1:], y.dtype.str, y.shape[1:])
        compiled = self._compiled.get(key)
        if compiled is None:
            import tensorflow as tf

            signature = [
                tf.TensorSpec((None, *a.shape[1:]), tf.string if a.dtype.kind in "USO" else a.dtype)
                for a in (x, y)
            ]
            compiled = self._compiled[key] = tf.function(self.fn, input_signature=signature)
        return compiled(x, y)


def _floats(logs: dict[str, Any]) -> Logs:
    return {k: float(v) for k, v in logs.items()}


class Steps:
    """The compiled steps of one compiled model.

    Parameters
    ----------
    model : keras.Model
        A compiled model; its ``steps_per_execution`` is the number of full batches per
        training call.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.jit = keras.backend.backend() == "tensorflow"
        self._many = _compile(self._train_many, self.jit)
        self._one = _AnyRows(self._train_one)
        self._test = _AnyRows(self._test_one)
        self._assign = _compile(self._assign_all, False)
        self._zero: tuple[int, Callable[[], Any]] | None = None
        self._jax = _JaxSteps(model) if keras.backend.backend() == "jax" else None

    def _assign_all(self, values: Sequence[Any]) -> None:
        for variable, value in zip(self.model.weights, values, strict=True):
            variable.assign(value)

    def set_weights(self, values: Sequence[np.ndarray]) -> None:
        """``model.set_weights(values)`` in one compiled call instead of one per variable."""
        if len(values) != len(self.model.weights):
            self.model.set_weights(values)  # Keras' own message
        self._assign(list(values))

    def reset_optimizer(self, learning_rate: float | None) -> None:
        """Zero the optimizer's state (moments, step count) and set its learning rate.

        Local training starts from fresh optimizer state every round, as in FedAvg; one
        compiled call zeroes every variable but the learning rate.
        """
        optimizer = self.model.optimizer
        lr_var = getattr(optimizer, "_learning_rate", None)
        state = [v for v in optimizer.variables if v is not lr_var]
        if self._zero is None or self._zero[0] != len(state):  # built on first training

            def zero() -> None:
                for variable in state:
                    variable.assign(keras.ops.zeros(variable.shape, dtype=variable.dtype))

            self._zero = (len(state), _compile(zero, False))
        self._zero[1]()
        if learning_rate is not None:
            optimizer.learning_rate = float(learning_rate)

    def _train_many(self, xs: Any, ys: Any, steps: Any) -> Any:
        def body(i: Any, carry: Any) -> Any:
            self.model.train_step((xs[i], ys[i]))
            return carry

        keras.ops.fori_loop(0, steps, body, 0)
        return self.model.get_metrics_result()

    def _train_one(self, x: Any, y: Any) -> Any:
        return self.model.train_step((x, y))

    def _test_one(self, x: Any, y: Any) -> Any:
        return self.model.test_step((x, y))

    def _run_many(self, xs: np.ndarray, ys: np.ndarray, steps: int) -> Any:
        if self.jit and xs.dtype.kind in "USO":  # strings: XLA has no string ops
            self._no_xla("string inputs")
        try:
            return self._many(xs, ys, np.asarray(steps, dtype=np.int32))
        except Exception as exc:  # an op XLA cannot compile: the same loop without XLA
            if not self.jit:
                raise
            self._no_xla(exc)
            return self._many(xs, ys, np.asarray(steps, dtype=np.int32))

    def _no_xla(self, why: object) -> None:
        log.debug("training without XLA: %s", why)
        self.jit = False
        self._many = _compile(self._train_many, False)

    def _epoch(self, x: np.ndarray, y: np.ndarray, order: np.ndarray, batch_size: int) -> Any:
        if self._jax is not None:
            return self._jax.epoch(x, y, order, batch_size)
        if keras.backend.backend() != "tensorflow":  # PyTorch: Keras' step, one batch per call
            logs: Any = None
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                logs = self._one(x[rows], y[rows])
            return logs
        full = len(order) // batch_size
        logs = self._full_batches(x, y, order[: full * batch_size], batch_size) if full else None
        rest = order[full * batch_size :]
        return self._one(x[rest], y[rest]) if len(rest) else logs

    def _full_batches(self, x: np.ndarray, y: np.ndarray, order: np.ndarray, size: int) -> Any:
        """Train on ``order``'s batches, up to ``steps_per_execution`` per compiled call."""
        row_bytes = x[:1].nbytes + y[:1].nbytes
        per_call = min(int(self.model.steps_per_execution), BUFFER_BYTES // (size * row_bytes))
        chunk = max(1, per_call)
        xs = np.zeros((chunk, size, *x.shape[1:]), dtype=x.dtype)
        ys = np.zeros((chunk, size, *y.shape[1:]), dtype=y.dtype)
        full, logs = len(order) // size, None
        for first in range(0, full, chunk):
            steps = min(chunk, full - first)
            rows = order[first * size : (first + steps) * size]
            xs[:steps] = x[rows].reshape(steps, size, *x.shape[1:])
            ys[:steps] = y[rows].reshape(steps, size, *y.shape[1:])
            logs = self._run_many(xs, ys, steps)
        return logs

    def build(self, x: np.ndarray, y: np.ndarray) -> None:
        """Create the optimizer's and metrics' variables before anything is compiled.

        As ``Model.fit`` does: variables created while a function is first traced make that
        first call run another graph (with slightly different float32 results), so the first
        client a process trained would depend on which client came first.
        """
        model = self.model
        try:
            model._symbolic_build(data_batch=(x[:1], y[:1]))  # Keras' own, as fit calls it
        except (ValueError, TypeError):  # inputs Keras cannot describe symbolically (strings)
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)

    def fit(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, orders: Sequence[np.ndarray]
    ) -> Logs:
        """Train one epoch per order (row permutation); the last epoch's loss and metrics."""
        self.build(x, y)
        logs: Any = {}
        for order in orders:
            self.model.reset_metrics()
            logs = self._epoch(x, y, order, batch_size)
        return _floats(logs or self.model.get_metrics_result())

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> Logs:
        """Loss and metrics over all rows (batches of ``batch_size``), as ``Model.evaluate``."""
        if keras.backend.backend() != "tensorflow":  # Keras' own evaluation
            own = self.model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
            return _floats(own)
        self.build(x, y)
        self.model.reset_metrics()
        logs: Any = {}
        for start in range(0, len(y), batch_size):
            logs = self._test(x[start : start + batch_size], y[start : start + batch_size])
        return _floats(logs or self.model.get_metrics_result())


def _captured(model: keras.Model) -> list[Any]:
    """Variables the model's loss reads without tracking them: its regularizers' variables.

    FedProx's term (``fedflower.client.proximal``) holds ``mu`` and the anchors in variables of
    the trainable variables' regularizers; a jitted JAX step must take their values as
    arguments, or it would keep the values it was traced with.
    """
    found: dict[int, Any] = {}
    for var in model.trainable_variables:
        regularizer = getattr(var, "regularizer", None)
        while regularizer is not None:
            for value in vars(regularizer).values():
                if isinstance(value, keras.Variable):
                    found.setdefault(id(value), value)
            regularizer = getattr(regularizer, "previous", None)
    return list(found.values())


class _JaxSteps:
    """Keras' stateless JAX ``train_step``, jitted once per model.

    The model's state (trainable, non-trainable, optimizer and metric variables) goes through
    the steps as arrays and is written back to the variables once per epoch, as Keras' own
    ``fit`` on JAX does; the regularizers' variables (:func:`_captured`) are arguments too.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.extra = _captured(model)
        self._train = self._jit(model.train_step)

    def _jit(self, step: Callable[..., Any]) -> Callable[..., Any]:
        import jax

        def run(state: Any, extra: list[Any], data: Any) -> Any:
            saved = [v._value for v in self.extra]
            for variable, value in zip(self.extra, extra, strict=True):
                variable._value = value  # read as traced values, not trace-time constants
            try:
                return step(state, data)
            finally:
                for variable, value in zip(self.extra, saved, strict=True):
                    variable._value = value

        return jax.jit(run)

    def _run(self, step: Callable[..., Any], batches: Any) -> Any:
        model = self.model
        groups = [
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
            model.metrics_variables,
        ]
        state = [[v.value for v in group] for group in groups]
        extra = [v.value for v in self.extra]
        logs: Any = None
        for data in batches:
            logs, state = step(state, extra, data)
        for group, values in zip(groups, state, strict=True):
            for variable, value in zip(group, values, strict=True):
                variable.assign(value)
        return logs

    def epoch(self, x: np.ndarray, y: np.ndarray, order: np.ndarray, size: int) -> Any:
        """Train on ``order``'s batches of ``size`` rows; the epoch's loss and metrics."""
        rows = (order[i : i + size] for i in range(0, len(order), size))
        return self._run(self._train, ((x[r], y[r]) for r in rows))


def steps_of(model: keras.Model) -> Steps:
    """The :class:`Steps` of ``model``, built on first use and kept with the model.

    A new set is built when the model's training objective changes (FedProx's term is
    attached, which resets Keras' own ``train_function`` to ``None``).
    """
    steps: Steps | None = getattr(model, _ATTR, None)
    if steps is None or model.train_function is None:
        steps = Steps(model)
        setattr(model, _ATTR, steps)
        model.make_train_function()  # marks the objective this set was traced with
    return steps
