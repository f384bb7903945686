"""Training and evaluation steps compiled once per model and process, fed NumPy batches.

``keras.Model.fit`` and ``evaluate`` set up a data adapter, a ``tf.data`` iterator, callbacks
and a progress logger on every call, and ``fit`` dispatches one compiled call per batch; for
the small models and local datasets of federated simulation that set-up costs more than the
training itself. Here the model's own ``train_step``/``test_step`` (so its loss, metrics,
optimizer and regularizers, FedProx's term included, are Keras') run inside functions built
once per model and reused by every client and round of the process:

* training: up to ``steps_per_execution`` (the model's compile option) full batches per call
  in one compiled loop, padded to that many batches so every client of every round shares
  one compiled shape, then the last partial batch, as Keras would order them;
* evaluation: one call per batch, no iterator;
* loading weights and zeroing the optimizer: one call each.

Each is traced once per input signature and called as a concrete function (:class:`_Compiled`),
skipping ``tf.function``'s per-call dispatch.

Batches come from a NumPy permutation seeded by the caller (:func:`batch_order`), so a
client's batches depend only on (seed, round, client), whatever engine or process runs it.
The steps are Keras' own; only their compilation is backend-specific: :class:`_Compiled`
(``tf.function``) on TensorFlow; on JAX, Keras' stateless ``train_step(state, data)`` jitted
once (:class:`_JaxSteps`, as Keras' JAX trainer builds its train function) with the state
carried from batch to batch as arrays; on PyTorch the model's ``train_step`` one batch at a
time. Evaluation on JAX and PyTorch is Keras' own ``Model.evaluate``.
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

ENCODER = "_fedflower_encoder"
"""Attribute of a model whose inputs are computed from the data's rows before each call: a
function of the rows (``fedflower.models.TokenIds``: a text model's token ids on backends
without string tensors)."""


FROZEN = "_fedflower_frozen"
"""Attribute of a model: the paths of the variables frozen for a block of training
(:func:`fedflower.client.frozen.frozen`); empty or absent: the model trains all it can."""


def encoded(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """``x`` as ``model`` takes it: through the model's :data:`ENCODER`, if it has one."""
    encoder = getattr(model, ENCODER, None)
    return x if encoder is None else encoder(x)


def batch_order(n: int, epochs: int, seed: int) -> list[np.ndarray]:
    """One permutation of ``range(n)`` per epoch, from NumPy's generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(epochs)]


def _spec(a: np.ndarray, any_rows: bool) -> Any:
    """The ``tf.TensorSpec`` of ``a`` (an unknown row count if ``any_rows``)."""
    import tensorflow as tf

    shape = (None, *a.shape[1:]) if any_rows else a.shape
    return tf.TensorSpec(shape, tf.string if a.dtype.kind in "USO" else a.dtype)


class _Compiled:
    """``fn`` traced once per input signature and called as a concrete function.

    A ``tf.function`` matches every call's arguments against its traces (and may relax a
    shape and trace again); for a small model that dispatch costs more than the step itself.
    Here each signature (dtypes and shapes, the row count left unknown if ``any_rows``) is
    traced once into its own graph, which is then called directly. One graph per signature
    also makes results independent of the order in which a process met the shapes (a graph
    traced for one shape and later relaxed to any shape computes in float32 slightly
    differently, and which clients a worker ran first would decide it). Keras' own trainer
    traces its steps without AutoGraph too: Keras code has no Python control flow on tensors.
    Other backends call ``fn`` itself.
    """

    def __init__(self, fn: Callable[..., Any], jit: bool = False, any_rows: bool = False) -> None:
        self.fn = fn
        self.jit = jit
        self.any_rows = any_rows
        self._traced: dict[tuple[Any, ...], Callable[..., Any]] = {}

    def __call__(self, *args: np.ndarray) -> Any:
        if keras.backend.backend() != "tensorflow":
            return self.fn(*args)
        key = tuple((a.dtype.str, a.shape[1:] if self.any_rows else a.shape) for a in args)
        traced = self._traced.get(key)
        if traced is None:
            import tensorflow as tf

            function = tf.function(self.fn, jit_compile=self.jit, autograph=False)
            specs = [_spec(a, self.any_rows) for a in args]
            traced = self._traced[key] = function.get_concrete_function(*specs)
        return traced(*args)


def _floats(logs: dict[str, Any]) -> Logs:
    return {k: float(v) for k, v in logs.items()}


class Steps:
    """The compiled steps of one compiled model.

    Parameters
    ----------
    model : keras.Model
        A compiled model; its ``steps_per_execution`` is the number of full batches per
        training call.
    jit : bool
        Compile the training loop with XLA. Off by default: on CPU, for the models of
        ``bench/peers.py`` (Dense, a small CNN), XLA's compilation took seconds per process
        and its loop ran no faster (the CNN's twice as slow) than TensorFlow's own kernels.
    """

    def __init__(self, model: keras.Model, jit: bool = False) -> None:
        self.model = model
        self.jit = jit and keras.backend.backend() == "tensorflow"
        self._many = _Compiled(self._train_many, self.jit)
        self._one = _Compiled(self._train_one, any_rows=True)
        self._test = _Compiled(self._test_one, any_rows=True)
        self._assign = _Compiled(self._assign_all)
        self._zero: tuple[int, Callable[..., Any]] | None = None
        self._reset: tuple[int, Callable[[], Any]] | None = None
        self._jax = _JaxSteps(model) if keras.backend.backend() == "jax" else None
        self.optimizer = model.optimizer if self._jax is None else self._jax.optimizer
        """The optimizer these steps train with: on JAX one per set of trainable variables."""

    def _assign_all(self, *values: Any) -> None:
        for variable, value in zip(self.model.weights, values, strict=True):
            variable.assign(value)

    def set_weights(self, values: Sequence[np.ndarray]) -> None:
        """``model.set_weights(values)`` in one compiled call instead of one per variable."""
        weights = self.model.weights
        arrays = [np.asarray(v, dtype=w.dtype) for v, w in zip(values, weights, strict=False)]
        if len(values) != len(weights) or any(
            a.shape != tuple(w.shape) for a, w in zip(arrays, weights, strict=True)
        ):
            self.model.set_weights(values)  # Keras' own message
        self._assign(*arrays)

    def reset_optimizer(self, learning_rate: float | None) -> None:
        """Zero the optimizer's state (moments, step count) and set its learning rate.

        Local training starts from fresh optimizer state every round, as in FedAvg; one
        compiled call zeroes every variable but the learning rate, and sets the learning
        rate when it is a plain variable (not a schedule). Call it on the steps that train
        next (inside :func:`fedflower.client.frozen.frozen` for a frozen set).
        """
        optimizer = self.optimizer
        lr_var: Any = getattr(optimizer, "_learning_rate", None)
        state = [v for v in optimizer.variables if v is not lr_var]
        if self._zero is None or self._zero[0] != len(state):  # built on first training

            def zero(*learning_rate: Any) -> None:
                for variable in state:
                    variable.assign(keras.ops.zeros(variable.shape, dtype=variable.dtype))
                for value in learning_rate:
                    lr_var.assign(value)

            self._zero = (len(state), _Compiled(zero))
        if learning_rate is not None and isinstance(lr_var, keras.Variable):
            self._zero[1](np.asarray(learning_rate, dtype=lr_var.dtype))
            return
        self._zero[1]()
        if learning_rate is not None:
            optimizer.learning_rate = float(learning_rate)

    def reset_metrics(self) -> None:
        """``model.reset_metrics()`` in one compiled call instead of one per metric variable.

        Traced again if the model's metrics gained variables (built by a first training step).
        """
        count = len(self.model.metrics_variables)
        if self._reset is None or self._reset[0] != count:
            self._reset = (count, _Compiled(self.model.reset_metrics))
        self._reset[1]()

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
        self._many = _Compiled(self._train_many)

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
        x = encoded(self.model, x)
        self.build(x, y)
        logs: Any = {}
        for order in orders:
            self.reset_metrics()
            logs = self._epoch(x, y, order, batch_size)
        return _floats(logs or self.model.get_metrics_result())

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> Logs:
        """Loss and metrics over all rows (batches of ``batch_size``), as ``Model.evaluate``."""
        x = encoded(self.model, x)
        if keras.backend.backend() != "tensorflow":  # Keras' own evaluation
            own = self.model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
            return _floats(own)
        self.build(x, y)
        self.reset_metrics()
        logs: Any = {}
        for start in range(0, len(y), batch_size):
            logs = self._test(x[start : start + batch_size], y[start : start + batch_size])
        return _floats(logs or self.model.get_metrics_result())


def _captured(model: keras.Model) -> list[Any]:
    """Variables the model's loss reads without tracking them: its regularizers' variables.

    FedProx's term (``fedflower.client.proximal``) holds ``mu`` and the anchors in variables of
    the trainable variables' regularizers; a jitted JAX step must take their values as
    arguments, or it would keep the values of its first trace.
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


def _own_optimizer(model: keras.Model) -> keras.optimizers.Optimizer:
    """A fresh copy of ``model``'s optimizer, built for the variables the model trains now.

    Keras' stateless optimizer update (``Optimizer.stateless_apply``, what the JAX train step
    calls) pairs the gradients with the variables the optimizer was built with (the model's
    own: all of them); a model trained with some weights frozen (FedRep's head, then its body)
    needs an optimizer built for exactly the variables it trains.
    """
    optimizer = model.optimizer
    own = type(optimizer).from_config(optimizer.get_config())
    own.build(model.trainable_variables)
    return own


class _JaxSteps:
    """Keras' stateless JAX ``train_step``, jitted once per model and set of trainable variables.

    The model's state (trainable, non-trainable, optimizer and metric variables) goes through
    the steps as arrays and is written back to the variables once per epoch, as Keras' own
    ``fit`` on JAX does; the regularizers' variables (:func:`_captured`) are arguments too.
    The model's own optimizer trains the model with nothing frozen; a set with frozen
    variables (:data:`FROZEN`) trains with its own (:func:`_own_optimizer`), put in the
    model's place while the step is traced.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.extra = _captured(model)
        self.optimizer = _own_optimizer(model) if getattr(model, FROZEN, None) else model.optimizer
        self._train = self._jit(model.train_step)

    def _jit(self, step: Callable[..., Any]) -> Callable[..., Any]:
        import jax

        def run(state: Any, extra: list[Any], data: Any) -> Any:
            saved = [v._value for v in self.extra]
            for variable, value in zip(self.extra, extra, strict=True):
                variable._value = value  # read as traced values, not trace-time constants
            model, optimizer = self.model, self.model.optimizer
            model.optimizer = self.optimizer  # the step reads it while it is traced
            try:
                return step(state, data)
            finally:
                model.optimizer = optimizer
                for variable, value in zip(self.extra, saved, strict=True):
                    variable._value = value

        return jax.jit(run)

    def _run(self, step: Callable[..., Any], batches: Any) -> Any:
        model = self.model
        groups = [
            model.trainable_variables,
            model.non_trainable_variables,
            self.optimizer.variables,
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
    attached, which resets Keras' own ``train_function`` to ``None``); one set is kept per
    set of trainable variables (FedRep trains the head and the body in turn,
    :mod:`fedflower.client.frozen`), since Keras reads them when it traces the train step.
    """
    kept: dict[tuple[int, ...], Steps] | None = getattr(model, _ATTR, None)
    if kept is None or model.train_function is None:
        kept = {}
        object.__setattr__(model, _ATTR, kept)  # Keras' attribute tracking would keep a copy
        model.make_train_function()  # marks the objective these sets were traced with
    trainable = tuple(id(v) for v in model.trainable_weights)
    if trainable not in kept:
        kept[trainable] = Steps(model)
    return kept[trainable]
