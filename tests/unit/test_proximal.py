"""FedProx's client side: the proximal term in the Keras objective (fedflower.client.proximal)."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from fedflower import keys
from fedflower.client import KerasClient
from fedflower.client.proximal import ProximalTerm, attached, proximal
from fedflower.data.source import ClientData
from fedflower.errors import ConfigError
from fedflower.models import compile_model, mlp

LR = 0.1
N, D, K = 12, 3, 2


def linear_model(seed: int = 0) -> keras.Model:
    """y = x W + b with mean squared error, trained by plain SGD."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D,))
    model = keras.Model(inputs, keras.layers.Dense(K)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    return model


def data(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((N, D)).astype(np.float32),
        rng.standard_normal((N, K)).astype(np.float32),
    )


def mse_gradient(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray):
    """Gradient of mean((x W + b - y)^2) over examples and outputs, by hand."""
    r = x.astype(np.float64) @ w + b - y
    scale = 2.0 / (N * K)
    return scale * x.T @ r, scale * r.sum(axis=0)


def test_one_sgd_step_follows_the_analytic_proximal_gradient() -> None:
    model = linear_model()
    x, y = data()
    w, b = (np.asarray(v, dtype=np.float64) for v in model.get_weights())
    rng = np.random.default_rng(2)
    w0, b0 = w + rng.standard_normal(w.shape), b + rng.standard_normal(b.shape)
    mu = 0.7
    term = ProximalTerm(model)
    for (_, anchor), value in zip(term.pairs, [w0, b0], strict=True):
        anchor.assign(value.astype(np.float32))
    term.mu.assign(mu)

    model.fit(x, y, batch_size=N, epochs=1, shuffle=False, verbose=0)

    gw, gb = mse_gradient(w, b, x, y)
    want_w = w - LR * (gw + mu * (w - w0))
    want_b = b - LR * (gb + mu * (b - b0))
    new_w, new_b = model.get_weights()
    np.testing.assert_allclose(new_w, want_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_b, want_b, rtol=1e-5, atol=1e-6)
    # The proximal part is not negligible here: without it the step would be elsewhere.
    assert np.max(np.abs(new_w - (w - LR * gw))) > 1e-2


def test_penalty_value_adds_to_an_existing_regularizer() -> None:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((D,))
    dense = keras.layers.Dense(K, kernel_regularizer=keras.regularizers.L2(0.05))
    model = keras.Model(inputs, dense(inputs))
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    w, b = (np.asarray(v, dtype=np.float64) for v in model.get_weights())
    term = ProximalTerm(model)
    w0, b0 = np.ones_like(w), -np.ones_like(b)
    for (_, anchor), value in zip(term.pairs, [w0, b0], strict=True):
        anchor.assign(value.astype(np.float32))
    term.mu.assign(2.0)
    total = float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses))
    want = 0.05 * np.sum(w**2) + 0.5 * 2.0 * (np.sum((w - w0) ** 2) + np.sum((b - b0) ** 2))
    assert total == pytest.approx(want, rel=1e-5)


def test_the_term_is_anchored_at_the_weights_the_block_starts_from() -> None:
    model = linear_model()
    start = [np.array(v) for v in model.get_weights()]
    with proximal(model, 0.5) as term:
        assert term is not None
        assert float(term.mu.numpy()) == pytest.approx(0.5)
        for (_, anchor), value in zip(term.pairs, start, strict=True):
            np.testing.assert_array_equal(anchor.numpy(), value)
        # At the anchor the penalty is exactly zero.
        assert float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses)) == 0.0
    assert float(term.mu.numpy()) == 0.0
    assert attached(model) is term


def test_mu_zero_on_a_plain_model_attaches_nothing() -> None:
    model = linear_model()
    with proximal(model, 0.0) as term:
        assert term is None
    assert attached(model) is None
    assert all(v.regularizer is None for v in model.trainable_weights)


@pytest.mark.parametrize("mu", [-0.1, float("nan"), float("inf")])
def test_invalid_mu_is_a_config_error(mu: float) -> None:
    with pytest.raises(ConfigError, match="proximal-mu"), proximal(linear_model(), mu):
        pass


# -- through KerasClient.fit ------------------------------------------------------------------
CONFIG = {keys.LOCAL_EPOCHS: 3, keys.BATCH_SIZE: 8, keys.LEARNING_RATE: 0.05, keys.SERVER_ROUND: 1}


def client_data() -> ClientData:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 1.0]) > 0).astype(np.int64)
    return ClientData(x[:48], y[:48], x[48:], y[48:])


def sgd_mlp() -> keras.Model:
    keras.utils.set_random_seed(7)
    model = mlp((4,), num_classes=2, hidden_units=(8,))
    return compile_model(model, keras.optimizers.SGD(0.05), num_classes=2)


@pytest.fixture(scope="module")
def global_weights() -> list[np.ndarray]:
    return [np.array(w) for w in sgd_mlp().get_weights()]


def distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b, strict=True))))


def test_mu_zero_gives_exactly_the_fedavg_weights(global_weights: list[np.ndarray]) -> None:
    fedavg, _, _ = KerasClient(sgd_mlp(), client_data(), cid=3).fit(global_weights, CONFIG)
    model = sgd_mlp()
    client = KerasClient(model, client_data(), cid=3)
    client.fit(global_weights, {**CONFIG, keys.PROXIMAL_MU: 1.0})  # attaches the term
    assert attached(model) is not None
    again, _, _ = client.fit(global_weights, {**CONFIG, keys.PROXIMAL_MU: 0.0})
    for a, b in zip(fedavg, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_larger_mu_keeps_local_weights_closer_to_the_global_ones(
    global_weights: list[np.ndarray],
) -> None:
    client = KerasClient(sgd_mlp(), client_data(), cid=1)
    config = {**CONFIG, keys.LOCAL_EPOCHS: 10}
    distances = []
    for mu in [0.0, 0.1, 1.0, 10.0]:
        weights, _, _ = client.fit(global_weights, {**config, keys.PROXIMAL_MU: mu})
        distances.append(distance(weights, global_weights))
    assert all(d1 > d2 for d1, d2 in itertools.pairwise(distances)), distances
    assert distances[-1] < 0.5 * distances[0], distances


def test_rounds_reuse_the_compiled_train_function(global_weights: list[np.ndarray]) -> None:
    model = sgd_mlp()
    client = KerasClient(model, client_data(), cid=0)
    client.fit(global_weights, {**CONFIG, keys.PROXIMAL_MU: 1.0})
    traced = model.train_function
    for rnd, mu in enumerate([0.01, 0.0, 5.0], start=2):
        client.fit(global_weights, {**CONFIG, keys.PROXIMAL_MU: mu, keys.SERVER_ROUND: rnd})
        assert model.train_function is traced


def test_evaluation_after_fedprox_training_has_no_proximal_term(
    global_weights: list[np.ndarray],
) -> None:
    model = sgd_mlp()
    client = KerasClient(model, client_data(), cid=0)
    trained, _, _ = client.fit(global_weights, {**CONFIG, keys.PROXIMAL_MU: 5.0})
    loss, _, _ = client.evaluate(trained, {keys.BATCH_SIZE: 64})
    plain, _, _ = KerasClient(sgd_mlp(), client_data(), cid=0).evaluate(
        trained, {keys.BATCH_SIZE: 64}
    )
    assert loss == pytest.approx(plain, rel=1e-6)


def test_steps_per_execution_gives_the_same_fedprox_weights(
    global_weights: list[np.ndarray],
) -> None:
    def trained(steps: int) -> list[np.ndarray]:
        keras.utils.set_random_seed(7)
        model = compile_model(
            mlp((4,), num_classes=2, hidden_units=(8,)),
            keras.optimizers.SGD(0.05),
            num_classes=2,
            steps_per_execution=steps,
        )
        weights, _, _ = KerasClient(model, client_data(), cid=2).fit(
            global_weights, {**CONFIG, keys.PROXIMAL_MU: 0.5}
        )
        return weights

    for a, b in zip(trained(1), trained(4), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
