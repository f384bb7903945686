"""Blocked, grouped folding in fedflower.aggregation: large layers, both accumulators, memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fedflower.aggregation import CHUNK, GROUP, WeightedMean, weighted_mean
from fedflower.errors import ConfigError, UpdateRejected

BIG = 2 * CHUNK + 123  # spans several blocks, with a partial last block


def updates(k: int, dtype: type = np.float32, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        [rng.standard_normal((BIG // 7, 7)).astype(dtype), rng.standard_normal(3).astype(dtype)]
        for _ in range(k)
    ]


def reference(ups: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
    return [
        np.average(np.stack([u[i].astype(np.float64) for u in ups]), axis=0, weights=weights)
        for i in range(len(ups[0]))
    ]


@pytest.mark.parametrize("k", [1, GROUP - 1, GROUP, 2 * GROUP + 3])
def test_large_layers_across_blocks_and_groups_match_np_average(k: int) -> None:
    ups = updates(k)
    weights = [float(1 + i % 5) for i in range(k)]
    got = weighted_mean(zip(ups, weights, strict=True))
    for g, w in zip(got, reference(ups, weights), strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_grouped_and_one_by_one_folding_give_identical_results() -> None:
    ups = updates(11)
    weights = [float(3 + i) for i in range(11)]
    acc = WeightedMean()
    for u, w in zip(ups, weights, strict=True):
        acc.add(u, w)
    for a, b in zip(acc.result(), weighted_mean(zip(ups, weights, strict=True)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_native_accumulator_keeps_float32_and_is_close() -> None:
    ups = updates(20)
    weights = [float(1 + i) for i in range(20)]
    acc = WeightedMean("native")
    acc.add_many(list(zip(ups, weights, strict=True)))
    assert acc._sums is not None and acc._sums[0].dtype == np.float32
    for g, w in zip(acc.result(), reference(ups, weights), strict=True):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_native_accumulator_keeps_float64_and_integers_in_float64() -> None:
    acc = WeightedMean("native")
    acc.add([np.ones(3, np.float64), np.array([1, 2], np.int32)], 1.0)
    assert acc._sums is not None
    assert [s.dtype for s in acc._sums] == [np.float64, np.float64]


def test_unknown_accumulator_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="accumulator"):
        WeightedMean("float16")


def test_add_many_is_all_or_nothing() -> None:
    acc = WeightedMean()
    acc.add([np.ones(4)], 1.0)
    with pytest.raises(UpdateRejected):
        acc.add_many([([np.full(4, 5.0)], 1.0), ([np.ones(5)], 1.0)])
    with pytest.raises(UpdateRejected):
        acc.add_many([([np.full(4, 5.0)], 1.0), ([np.ones(4)], -2.0)])
    assert acc.count == 1
    np.testing.assert_array_equal(acc.result()[0], np.ones(4))


def peak(k: int, pool: list[list[np.ndarray]]) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    weighted_mean((pool[i % len(pool)], 1.0 + i) for i in range(k))
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top


def test_float64_accumulator_memory() -> None:
    pool = updates(3)
    model_bytes = sum(a.nbytes for a in pool[0])
    tracemalloc.start()
    tracemalloc.reset_peak()
    weighted_mean(((u, 1.0) for u in pool), accumulator="float64")
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # one float64 accumulator (2x the float32 model) + the float32 result + block scratch
    assert 3 * model_bytes <= top < 3 * model_bytes + 2 * CHUNK * 8 + 8192


def test_memory_does_not_grow_with_the_number_of_clients() -> None:
    pool = updates(3)
    model_bytes = sum(a.nbytes for a in pool[0])
    small, large = peak(4, pool), peak(200, pool)
    # one float32 accumulator (the default sums float32 layers in float32) + the float32
    # result + one block of scratch per layer
    assert small < 2 * model_bytes + 2 * CHUNK * 4 + 8192
    assert large < small + 64 * 1024
