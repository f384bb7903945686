"""aggregation.staleness: staleness functions, the FedBuff buffer and FedAsync mixing vs NumPy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedflower.aggregation import ServerSGD, weighted_mean
from fedflower.aggregation.staleness import (
    Constant,
    FedBuffServer,
    Hinge,
    Polynomial,
    StalenessBuffer,
    StalenessFn,
    apply_delta,
    delta,
    make_staleness,
    mix,
    optimizer_step,
)
from fedflower.errors import ConfigError, UpdateRejected

SHAPES = [(3, 4), (4,), (2, 3, 5), ()]


def arrays(rng: np.random.Generator, dtype: type = np.float32) -> list[np.ndarray]:
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


# -- staleness functions ---------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0, 1, 2, 5, 17, 100])
@pytest.mark.parametrize("a", [0.0, 0.5, 1.0, 2.5])
def test_polynomial_matches_formula(tau: int, a: float) -> None:
    assert Polynomial(a)(tau) == pytest.approx((tau + 1) ** (-a), rel=1e-15)


@pytest.mark.parametrize("tau", [0, 1, 3, 4, 5, 6, 10, 50])
@pytest.mark.parametrize(("a", "b"), [(10.0, 4.0), (1.0, 0.0), (0.5, 2.0), (3.0, 6.0)])
def test_hinge_matches_formula(tau: int, a: float, b: float) -> None:
    expected = 1.0 if tau <= b else 1.0 / (a * (tau - b) + 1.0)
    assert Hinge(a, b)(tau) == pytest.approx(expected, rel=1e-15)


def test_hinge_is_one_up_to_b_and_decreasing_after() -> None:
    s = Hinge(a=10, b=4)
    assert [s(t) for t in range(5)] == [1.0] * 5
    values = [s(t) for t in range(4, 30)]
    assert all(x > y for x, y in itertools.pairwise(values))
    assert s(5) == pytest.approx(1 / 11)


@pytest.mark.parametrize("tau", [0, 3, 1000])
def test_constant_is_one(tau: int) -> None:
    assert Constant()(tau) == 1.0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("constant", Constant()),
        ("polynomial", Polynomial(0.5)),
        ({"name": "polynomial", "a": 2}, Polynomial(2.0)),
        ({"name": "hinge", "a": 1.0, "b": 3}, Hinge(1.0, 3.0)),
        ({"name": "hinge"}, Hinge(10.0, 4.0)),
        ({"name": "constant", "a": 0.5}, Constant()),  # left over from polynomial
        ({"name": "polynomial", "a": 2.0, "b": 4}, Polynomial(2.0)),
        (None, Constant()),
    ],
)
def test_make_staleness(spec: object, expected: object) -> None:
    assert make_staleness(spec) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("exponential", "staleness.name must be one of constant, polynomial, hinge, got 'expo"),
        ({"name": "polynomial", "c": 1}, "bad parameters"),
        ({"name": "polynomial", "a": -1}, "staleness.a must be a number >= 0, got -1"),
        ({"name": "hinge", "b": float("nan")}, "staleness.b must be a number >= 0, got nan"),
        (3, "must be a name or a mapping"),
    ],
)
def test_make_staleness_rejects_bad_specs(spec: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_staleness(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("tau", [-1, 1.5, True])
def test_staleness_must_be_a_natural_number(tau: object) -> None:
    with pytest.raises(ValueError, match="staleness must be an integer >= 0"):
        Polynomial()(tau)  # type: ignore[arg-type]


# -- the FedBuff buffer ----------------------------------------------------------------------
def test_buffer_mean_matches_reference_with_staleness_weights() -> None:
    rng = np.random.default_rng(0)
    deltas = [arrays(rng, np.float64) for _ in range(5)]
    weights = [3.0, 1.0, 7.0, 2.0, 5.0]
    taus = [0, 4, 1, 9, 2]
    s = Polynomial(0.5)
    buffer = StalenessBuffer(5, s)
    full = [buffer.add(d, w, t) for d, w, t in zip(deltas, weights, taus, strict=True)]
    assert full == [False, False, False, False, True]
    got = buffer.take()
    for i in range(len(SHAPES)):
        expected = sum(w * s(t) * d[i] for d, w, t in zip(deltas, weights, taus, strict=True))
        np.testing.assert_allclose(got[i], expected / sum(weights), rtol=1e-12, atol=1e-15)


def streamed_mean(
    updates: list[tuple[list[np.ndarray], float, int]], s: StalenessFn
) -> list[np.ndarray]:
    """The buffer's mean streamed without WeightedMean, one delta at a time (the reference)."""
    sums = [np.zeros(np.shape(a)) for a in updates[0][0]]
    for arrays, w, tau in updates:
        for acc, a in zip(sums, arrays, strict=True):
            acc += np.multiply(a, w * s(tau))
    return [acc / sum(w for _, w, _ in updates) for acc in sums]


@pytest.mark.parametrize("s", [Constant(), Polynomial(0.5), Hinge(a=2.0, b=1)], ids=repr)
def test_buffer_equals_the_streamed_mean_within_float64_round_off(s: StalenessFn) -> None:
    # WeightedMean folds w * s(tau) * delta exactly as the stream did; the result is then
    # rescaled by sum(w s) / sum(w): one more rounding (<= 1 ulp), none when s is constant
    rng = np.random.default_rng(5)
    for _ in range(3):
        updates = [
            (arrays(rng, np.float64), float(rng.integers(1, 200)), int(rng.integers(0, 8)))
            for _ in range(6)
        ]
        buffer = StalenessBuffer(6, s)
        for update in updates:
            buffer.add(*update)
        got, want = buffer.take(), streamed_mean(updates, s)
        for g, w in zip(got, want, strict=True):
            if isinstance(s, Constant):
                np.testing.assert_array_equal(g, w)
            else:
                np.testing.assert_allclose(g, w, rtol=4e-16, atol=0)


def test_buffer_arrival_order_does_not_change_the_result() -> None:
    rng = np.random.default_rng(1)
    updates = [
        (arrays(rng), float(rng.integers(1, 100)), int(rng.integers(0, 6))) for _ in range(4)
    ]
    results = []
    for order in itertools.permutations(range(4)):
        buffer = StalenessBuffer(4, Hinge(a=0.5, b=1))
        for i in order:
            buffer.add(*updates[i])
        results.append(buffer.take())
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_buffer_is_reusable_and_keeps_one_accumulator() -> None:
    rng = np.random.default_rng(2)
    buffer = StalenessBuffer(2)
    first = [arrays(rng, np.float64) for _ in range(2)]
    second = [arrays(rng, np.float64) for _ in range(2)]
    for d in first:
        buffer.add(d, 1.0, 0)
    buffer.take()
    accumulators = [id(a) for a in buffer._mean._sums or []]
    for d in second:
        buffer.add(d, 1.0, 0)
    got = buffer.take()
    assert [id(a) for a in buffer._mean._sums or []] == accumulators
    for i in range(len(SHAPES)):
        np.testing.assert_allclose(got[i], (second[0][i] + second[1][i]) / 2, rtol=1e-12)


def test_buffer_rejects_bad_updates() -> None:
    buffer = StalenessBuffer(3)
    buffer.add([np.zeros((2, 2))], 1.0, 0)
    with pytest.raises(UpdateRejected, match=r"shape \(3,\) does not match \(2, 2\)"):
        buffer.add([np.zeros(3)], 1.0, 0)
    with pytest.raises(UpdateRejected, match="update has 2 arrays"):
        buffer.add([np.zeros((2, 2)), np.zeros(1)], 1.0, 0)
    with pytest.raises(UpdateRejected, match="weight must be finite"):
        buffer.add([np.zeros((2, 2))], float("nan"), 0)
    assert buffer.count == 1
    with pytest.raises(ConfigError, match="buffer_size must be an integer >= 1, got 0"):
        StalenessBuffer(0)


# -- the FedBuff server ----------------------------------------------------------------------
def test_fedbuff_with_k_equal_n_and_constant_staleness_is_fedavg() -> None:
    rng = np.random.default_rng(3)
    model = arrays(rng)
    clients = [arrays(rng) for _ in range(4)]
    examples = [10.0, 40.0, 25.0, 5.0]
    server = FedBuffServer(model, buffer_size=4, staleness=Constant(), server_lr=1.0)
    for c, n in zip(clients, examples, strict=True):
        server.add(delta(c, model), n, 0)
    assert server.version == 1
    fedavg = weighted_mean(zip(clients, examples, strict=True))
    for got, want in zip(server.model, fedavg, strict=True):
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_fedbuff_server_lr_scales_the_step_and_stale_updates_shrink_it() -> None:
    model = [np.zeros(3)]
    server = FedBuffServer(model, buffer_size=2, staleness=Polynomial(1.0), server_lr=0.5)
    assert not server.add([np.array([1.0, 2.0, 3.0])], 1.0, 0)
    assert server.add([np.array([3.0, 2.0, 1.0])], 1.0, 3)  # weight 1/4
    expected = 0.5 * (np.array([1.0, 2.0, 3.0]) + 0.25 * np.array([3.0, 2.0, 1.0])) / 2
    np.testing.assert_allclose(server.model[0], expected, rtol=1e-15)


def test_fedbuff_server_optimizer_step() -> None:
    rng = np.random.default_rng(4)
    model = arrays(rng, np.float64)
    updates = [arrays(rng, np.float64) for _ in range(2)]
    plain = FedBuffServer(model, 2)
    sgd = FedBuffServer(model, 2, step=optimizer_step(ServerSGD(1.0, 0.0)))
    momentum = FedBuffServer(model, 2, step=optimizer_step(ServerSGD(1.0, 0.9)))
    for u in updates * 2:  # two server versions
        for server in (plain, sgd, momentum):
            server.add(u, 1.0, 0)
    mean = [(a + b) / 2 for a, b in zip(*updates, strict=True)]
    for x0, p, s, m, d in zip(model, plain.model, sgd.model, momentum.model, mean, strict=True):
        np.testing.assert_allclose(p, x0 + 2 * d, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s, p, rtol=1e-12, atol=1e-12)
        # heavy ball: m1 = d, m2 = 0.9 d + d; x2 = x0 + d + 1.9 d
        np.testing.assert_allclose(m, x0 + 2.9 * d, rtol=1e-12, atol=1e-12)


def test_apply_delta_keeps_integer_layers_integer() -> None:
    out = apply_delta([np.array([1, 2], dtype=np.int64)], [np.array([0.6, -0.4])])
    assert out[0].dtype == np.int64
    assert out[0].tolist() == [2, 2]


def test_fedbuff_server_validates_its_options() -> None:
    with pytest.raises(ConfigError, match="server_lr must be a number > 0, got 0"):
        FedBuffServer([np.zeros(1)], 1, server_lr=0)


# -- FedAsync mixing -------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.6, 1.0])
def test_mix_matches_formula(alpha: float) -> None:
    rng = np.random.default_rng(5)
    x, c = arrays(rng, np.float64), arrays(rng, np.float64)
    for got, a, b in zip(mix(x, c, alpha), x, c, strict=True):
        np.testing.assert_allclose(got, (1 - alpha) * a + alpha * b, rtol=1e-15, atol=1e-15)


def test_mix_keeps_dtypes_and_checks_inputs() -> None:
    x = [np.ones(2, dtype=np.float32)]
    assert mix(x, [np.zeros(2, dtype=np.float32)], 0.25)[0].dtype == np.float32
    with pytest.raises(ValueError, match=r"mixing weight must be in \[0, 1\], got 1.5"):
        mix(x, x, 1.5)
    with pytest.raises(UpdateRejected, match="does not match"):
        mix(x, [np.ones(3)], 0.5)


def test_fedbuff_server_state_round_trip_mid_buffer_continues_bit_identically() -> None:
    """Checkpointed with a half-full buffer and momentum: the copy goes on like the original."""
    rng = np.random.default_rng(5)
    model = arrays(rng)
    updates = [arrays(rng) for _ in range(7)]
    original = FedBuffServer(model, 3, Polynomial(0.5), optimizer=ServerSGD(1.0, 0.9))
    for i, u in enumerate(updates[:4]):  # one version, then one update pending
        original.add(u, 1.0 + i, i % 2)
    state = original.state_dict()
    assert state["buffer"]["count"] == 1 and state["optimizer"]["m"] is not None
    copy = FedBuffServer(model, 3, Polynomial(0.5), optimizer=ServerSGD(1.0, 0.9))
    copy.load_state_dict(state)
    for i, u in enumerate(updates[4:]):
        assert original.add(u, 2.0 + i, i) == copy.add(u, 2.0 + i, i)
    assert original.version == copy.version == 2
    for a, b in zip(original.model, copy.model, strict=True):
        np.testing.assert_array_equal(a, b)
