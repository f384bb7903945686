"""fedflower.aggregation against a NumPy reference (np.average / explicit weighted sums)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedflower.aggregation import WeightedMean, check_update, weighted_mean
from fedflower.errors import UpdateRejected

SHAPES = [(3, 4), (4,), (2, 3, 5), (), (1, 7)]
"""Layers of different ranks, including a scalar."""


def make_updates(
    rng: np.random.Generator,
    num_clients: int,
    dtype: np.dtype | type = np.float32,
    shapes: list[tuple[int, ...]] = SHAPES,
) -> list[list[np.ndarray]]:
    """``num_clients`` updates with one array per shape, of ``dtype``."""
    updates = []
    for _ in range(num_clients):
        if np.issubdtype(dtype, np.integer):
            layers = [rng.integers(-50, 50, size=s).astype(dtype) for s in shapes]
        else:
            layers = [rng.standard_normal(s).astype(dtype) for s in shapes]
        updates.append(layers)
    return updates


def reference(updates: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
    """np.average over clients, layer by layer, in float64 (not cast back)."""
    return [
        np.average(np.stack([u[i].astype(np.float64) for u in updates]), axis=0, weights=weights)
        for i in range(len(updates[0]))
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "weights",
    [[1.0, 1.0, 1.0], [1.0, 2.0, 7.0], [100.0, 1.0, 0.5, 3.0], [3.0], [0.25, 1e6]],
)
def test_float_layers_match_np_average(dtype: type, weights: list[float]) -> None:
    rng = np.random.default_rng(len(weights))
    updates = make_updates(rng, len(weights), dtype)
    got = weighted_mean(zip(updates, weights, strict=True))
    want = reference(updates, weights)
    assert len(got) == len(SHAPES)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    for g, w, shape in zip(got, want, SHAPES, strict=True):
        assert g.dtype == dtype
        assert g.shape == shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol)


def test_unequal_weights_differ_from_plain_mean() -> None:
    """Guard against an implementation that ignores the weights."""
    updates = [[np.array([0.0, 0.0])], [np.array([10.0, 20.0])]]
    got = weighted_mean(zip(updates, [3.0, 1.0], strict=True))[0]
    np.testing.assert_allclose(got, [2.5, 5.0])  # (3*0 + 1*10) / 4, (3*0 + 1*20) / 4
    assert not np.allclose(got, np.mean([u[0] for u in updates], axis=0))


def test_explicit_weighted_sum_formula() -> None:
    rng = np.random.default_rng(7)
    updates = make_updates(rng, 5, np.float64)
    weights = [5.0, 1.0, 2.0, 8.0, 3.0]
    got = weighted_mean(zip(updates, weights, strict=True))
    for i in range(len(SHAPES)):
        total = sum(w * u[i] for u, w in zip(updates, weights, strict=True))
        np.testing.assert_allclose(got[i], total / sum(weights), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8])
def test_integer_layers_are_rounded_and_keep_their_dtype(dtype: type) -> None:
    rng = np.random.default_rng(3)
    shapes = [(4, 5), (6,)]
    if np.issubdtype(dtype, np.unsignedinteger):
        updates = [[rng.integers(0, 100, size=s).astype(dtype) for s in shapes] for _ in range(3)]
    else:
        updates = make_updates(rng, 3, dtype, shapes)
    weights = [1.0, 2.0, 4.0]
    got = weighted_mean(zip(updates, weights, strict=True))
    for g, w in zip(got, reference(updates, weights), strict=True):
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, np.rint(w).astype(dtype))


def test_integer_rounding_is_to_nearest_not_truncation() -> None:
    # means 1.75, 2.25, -1.75 -> 2, 2, -2 (truncation would give 1, 2, -1)
    a = np.array([1, 2, -1], dtype=np.int64)
    b = np.array([2, 3, -2], dtype=np.int64)
    got = weighted_mean([([a], 1.0), ([b], 3.0)])[0]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [2, 3, -2])
    got = weighted_mean([([a], 1.0), ([b], 1.0 / 3.0)])[0]  # means 1.25, 2.25, -1.25
    np.testing.assert_array_equal(got, [1, 2, -1])


def test_mixed_dtypes_per_layer_are_each_preserved() -> None:
    rng = np.random.default_rng(11)
    updates = [
        [rng.standard_normal(3).astype(np.float32), rng.integers(0, 9, 2).astype(np.int32)]
        for _ in range(4)
    ]
    weights = [1.0, 2.0, 3.0, 4.0]
    got = weighted_mean(zip(updates, weights, strict=True))
    want = reference(updates, weights)
    assert [g.dtype for g in got] == [np.float32, np.int32]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    np.testing.assert_array_equal(got[1], np.rint(want[1]))


def test_streaming_result_does_not_depend_on_update_order() -> None:
    rng = np.random.default_rng(5)
    updates = make_updates(rng, 4, np.float64)
    weights = [1.0, 3.0, 0.5, 2.0]
    results = []
    for order in itertools.permutations(range(4)):
        acc = WeightedMean()
        for k in order:
            acc.add(updates[k], weights[k])
        results.append(acc.result())
    want = reference(updates, weights)
    for result in results:
        for g, w in zip(result, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


def test_float64_sums_give_an_identical_float32_result_for_every_order() -> None:
    rng = np.random.default_rng(6)
    updates = make_updates(rng, 3, np.float32)
    weights = [10.0, 20.0, 30.0]
    first = None
    for order in itertools.permutations(range(3)):
        got = weighted_mean(((updates[k], weights[k]) for k in order), accumulator="float64")
        if first is None:
            first = got
        for g, f in zip(got, first, strict=True):
            np.testing.assert_array_equal(g, f)


def test_native_sums_depend_on_the_order_by_float32_round_off_only() -> None:
    # the default float32 sums round at every step (products, K - 1 additions, the division):
    # the error of any order is within the classic bound (K + 1) u sum_k w_k |x_k| / sum_k w_k
    # (u = 2**-24), which is why the strategies fold in one fixed order (node ids)
    rng = np.random.default_rng(6)
    updates = make_updates(rng, 3, np.float32)
    weights = [10.0, 20.0, 30.0]
    exact = weighted_mean(zip(updates, weights, strict=True), accumulator="float64")
    bound = [
        (3 + 1)
        * 2.0**-24
        * sum(w * np.abs(u[i].astype(np.float64)) for u, w in zip(updates, weights, strict=True))
        / sum(weights)
        for i in range(len(exact))
    ]
    results = []
    for order in itertools.permutations(range(3)):
        got = weighted_mean((updates[k], weights[k]) for k in order)
        results.append(got)
        for g, e, b in zip(got, exact, bound, strict=True):
            assert g.dtype == np.float32
            assert np.all(np.abs(g.astype(np.float64) - e) <= b + np.spacing(np.abs(e)))
    # the same order always gives the same bits
    again = weighted_mean(zip(updates, weights, strict=True))
    for g, f in zip(again, results[0], strict=True):
        np.testing.assert_array_equal(g, f)


def test_count_and_total_weight() -> None:
    rng = np.random.default_rng(0)
    acc = WeightedMean()
    assert acc.count == 0
    assert acc.total_weight == 0.0
    weights = [3.0, 0.0, 12.5, 4]
    for update, w in zip(make_updates(rng, 4), weights, strict=True):
        acc.add(update, w)
    assert acc.count == 4
    assert acc.total_weight == pytest.approx(19.5)


def test_zero_weight_update_contributes_nothing() -> None:
    rng = np.random.default_rng(1)
    updates = make_updates(rng, 3, np.float64)
    with_zero = weighted_mean(zip(updates, [2.0, 0.0, 5.0], strict=True))
    without = weighted_mean(zip([updates[0], updates[2]], [2.0, 5.0], strict=True))
    for a, b in zip(with_zero, without, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-15)


def test_all_zero_weights_are_rejected() -> None:
    rng = np.random.default_rng(2)
    acc = WeightedMean()
    for update in make_updates(rng, 2):
        acc.add(update, 0.0)
    with pytest.raises(UpdateRejected, match="zero"):
        acc.result()


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_invalid_weight_is_rejected_and_leaves_the_accumulator_untouched(weight: float) -> None:
    acc = WeightedMean()
    acc.add([np.array([1.0, 2.0])], 1.0)
    with pytest.raises(UpdateRejected, match="weight"):
        acc.add([np.array([100.0, 100.0])], weight)
    assert acc.count == 1
    np.testing.assert_allclose(acc.result()[0], [1.0, 2.0])


def test_result_without_updates_raises() -> None:
    with pytest.raises(ValueError, match="no update"):
        WeightedMean().result()
    with pytest.raises(ValueError):
        weighted_mean([])


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param([np.zeros((3, 4)), np.zeros(5)], id="second-layer-shape"),
        pytest.param([np.zeros((4, 3)), np.zeros(4)], id="first-layer-transposed"),
        pytest.param([np.zeros((3, 4))], id="missing-layer"),
        pytest.param([np.zeros((3, 4)), np.zeros(4), np.zeros(1)], id="extra-layer"),
    ],
)
def test_mismatched_update_is_rejected_without_corrupting_the_sum(bad: list[np.ndarray]) -> None:
    """A rejected update must not leave partial sums behind (callers keep streaming)."""
    good1 = [np.ones((3, 4)), np.full(4, 2.0)]
    good2 = [np.full((3, 4), 3.0), np.full(4, 4.0)]
    acc = WeightedMean()
    acc.add(good1, 1.0)
    bad = [b + 1000.0 for b in bad]
    with pytest.raises(UpdateRejected):
        acc.add(bad, 5.0)
    acc.add(good2, 1.0)
    assert acc.count == 2
    assert acc.total_weight == 2.0
    got = acc.result()
    np.testing.assert_allclose(got[0], np.full((3, 4), 2.0))
    np.testing.assert_allclose(got[1], np.full(4, 3.0))


def test_weighted_mean_does_not_modify_its_inputs() -> None:
    rng = np.random.default_rng(4)
    updates = make_updates(rng, 3, np.float32)
    copies = [[a.copy() for a in u] for u in updates]
    weighted_mean(zip(updates, [1.0, 2.0, 3.0], strict=True))
    for u, c in zip(updates, copies, strict=True):
        for a, b in zip(u, c, strict=True):
            np.testing.assert_array_equal(a, b)


# -- check_update ------------------------------------------------------------------------------
REFERENCE = [np.zeros((3, 4), np.float32), np.zeros(4, np.float32), np.zeros((), np.float32)]


def test_check_update_accepts_matching_finite_update() -> None:
    rng = np.random.default_rng(9)
    check_update(make_updates(rng, 1, np.float32, [(3, 4), (4,), ()])[0], REFERENCE)
    check_update([np.ones((3, 4), np.int32), np.ones(4, np.int8), np.int64(3)], REFERENCE)


def _with(index: int, value: np.ndarray) -> list[np.ndarray]:
    arrays = [r.copy() for r in REFERENCE]
    arrays[index] = value
    return arrays


def _poison(index: int, value: float) -> list[np.ndarray]:
    arrays = [r.copy() for r in REFERENCE]
    arrays[index] = arrays[index].copy()
    arrays[index].flat[0] = value
    return arrays


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        pytest.param(_with(0, np.zeros((4, 3), np.float32)), "shape", id="transposed"),
        pytest.param(_with(1, np.zeros(5, np.float32)), "shape", id="wrong-length"),
        pytest.param(_with(2, np.zeros(1, np.float32)), "shape", id="scalar-vs-1d"),
        pytest.param(REFERENCE[:2], "2 arrays", id="missing-layer"),
        pytest.param([*REFERENCE, np.zeros(1)], "4 arrays", id="extra-layer"),
        pytest.param(_poison(0, np.nan), "NaN", id="nan-first"),
        pytest.param(_poison(1, np.inf), "infinite", id="inf"),
        pytest.param(_poison(2, -np.inf), "infinite", id="neg-inf-scalar"),
    ],
)
def test_check_update_rejects(arrays: list[np.ndarray], match: str) -> None:
    with pytest.raises(UpdateRejected, match=match):
        check_update(arrays, REFERENCE)


def test_check_update_rejects_nan_in_float64_layer_of_large_model() -> None:
    rng = np.random.default_rng(8)
    ref = make_updates(rng, 1, np.float64, [(50, 40), (40,)])[0]
    bad = [a.copy() for a in ref]
    bad[0][17, 23] = np.nan
    check_update(ref, ref)
    with pytest.raises(UpdateRejected, match="array 0"):
        check_update(bad, ref)
