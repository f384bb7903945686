"""Compiled steps: the same training and evaluation as Keras' ``fit``/``evaluate``, reproducibly."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fedflower.models import compile_model, mlp
from fedflower.steps import batch_order, steps_of

ROWS, FEATURES, BATCH = 203, 6, 16  # 12 full batches and a partial one of 11 rows


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((ROWS, FEATURES)).astype(np.float32)
    return x, (x[:, 0] + 0.3 * rng.standard_normal(ROWS) > 0).astype(np.float32)


def model(steps_per_execution: int = 5) -> keras.Model:
    keras.utils.set_random_seed(1)
    m = mlp((FEATURES,), 2, hidden_units=(8,))
    return compile_model(m, keras.optimizers.Adam(0.01), 2, steps_per_execution)


@pytest.mark.parametrize("steps_per_execution", [1, 5, 32])
def test_fit_is_keras_fit_on_the_same_batches(steps_per_execution: int) -> None:
    """Same batches, same order (full ones, then the partial one): same model and metrics."""
    x, y = data()
    orders = batch_order(ROWS, 2, seed=7)
    ours, reference = model(steps_per_execution), model()
    start = ours.get_weights()
    logs = steps_of(ours).fit(x, y, BATCH, orders)
    history = None
    for order in orders:
        history = reference.fit(x[order], y[order], batch_size=BATCH, shuffle=False, verbose=0)
    assert history is not None
    for got, want, before in zip(ours.get_weights(), reference.get_weights(), start, strict=True):
        np.testing.assert_allclose(got, want, atol=2e-5)
        assert np.abs(got - before).max() > 1e-3  # it trained
    assert logs["loss"] == pytest.approx(history.history["loss"][-1], abs=1e-5)
    assert logs["accuracy"] == pytest.approx(history.history["accuracy"][-1], abs=1e-6)


def test_the_same_seed_gives_the_same_model_bit_for_bit() -> None:
    x, y = data()
    m = model()
    steps = steps_of(m)
    start = m.get_weights()
    results = []
    for _ in range(2):
        steps.set_weights(start)
        steps.reset_optimizer(0.01)
        logs = steps.fit(x, y, BATCH, batch_order(ROWS, 1, seed=11))
        results.append((m.get_weights(), logs))
    for a, b in zip(results[0][0], results[1][0], strict=True):
        assert np.array_equal(a, b)
    assert results[0][1] == results[1][1]


def test_batch_order_depends_on_the_seed_only() -> None:
    first = batch_order(50, 3, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(first, batch_order(50, 3, 5), strict=True))
    assert sorted(first[0].tolist()) == list(range(50))
    assert not np.array_equal(first[0], first[1])  # each epoch its own order
    assert not np.array_equal(first[0], batch_order(50, 1, seed=6)[0])


def test_evaluate_is_keras_evaluate() -> None:
    x, y = data()
    m = model()
    got = steps_of(m).evaluate(x, y, 64)
    want = m.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert got == pytest.approx(want, abs=1e-6)


def test_set_weights_and_reset_optimizer() -> None:
    x, y = data()
    m = model()
    steps = steps_of(m)
    steps.fit(x, y, BATCH, batch_order(ROWS, 1, 0))
    assert any(np.abs(v.numpy()).max() > 0 for v in m.optimizer.variables[2:])
    steps.reset_optimizer(0.5)
    assert float(m.optimizer.learning_rate) == pytest.approx(0.5)
    state = [v for v in m.optimizer.variables if v is not m.optimizer._learning_rate]
    assert all(not np.any(v.numpy()) for v in state)
    zeros = [np.zeros_like(w) for w in m.get_weights()]
    steps.set_weights(zeros)
    assert all(not np.any(w) for w in m.get_weights())
    with pytest.raises(ValueError):
        steps.set_weights(zeros[:-1])
