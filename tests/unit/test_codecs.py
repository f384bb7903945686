"""Codecs: round-trip error bounds, top-k selection, error feedback, malformed input."""

from __future__ import annotations

import numpy as np
import pytest

from fedflower.aggregation import codecs
from fedflower.aggregation.codecs import Codec, decode_arrays, decode_parts, encode_arrays
from fedflower.errors import ConfigError, UpdateRejected


@pytest.fixture
def x() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((300, 40)) * rng.uniform(0.1, 3.0, 40)).astype(np.float32)


def test_fp16_relative_error(x: np.ndarray) -> None:
    y = decode_parts(Codec("fp16", min_elements=0).encode(x))
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.all(np.abs(y - x) <= 2.0**-11 * np.abs(x) + 2.0**-24)


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_round_to_nearest_within_half_step(x: np.ndarray, per_channel: bool) -> None:
    parts = Codec("int8", per_channel=per_channel, min_elements=0).encode(x)
    assert parts["q"].dtype == np.uint8 and parts["q"].shape == x.shape
    step = (x.max(axis=0) - x.min(axis=0)) / 255 if per_channel else np.ptp(x) / 255
    assert parts["step"].size == (x.shape[1] if per_channel else 1)
    err = np.abs(decode_parts(parts) - x)
    assert np.all(err <= step / 2 * (1 + 1e-4) + 1e-7)
    assert err.max() > step.min() / 4  # it does quantize


def test_int8_per_channel_is_tighter_when_channel_ranges_differ(x: np.ndarray) -> None:
    tensor = np.abs(decode_parts(Codec("int8", min_elements=0).encode(x)) - x).mean()
    channel = np.abs(
        decode_parts(Codec("int8", per_channel=True, min_elements=0).encode(x)) - x
    ).mean()
    assert channel < 0.7 * tensor


def test_int8_stochastic_rounding_is_unbiased_and_within_one_step(x: np.ndarray) -> None:
    codec = Codec("int8", stochastic=True, min_elements=0)
    rng = np.random.default_rng(1)
    draws = np.stack([decode_parts(codec.encode(x, rng)) for _ in range(400)])
    step = np.ptp(x) / 255
    assert np.all(np.abs(draws - x) < step * (1 + 1e-4))
    # the mean of 400 draws: each has std <= step / 2, so 5 sigma is step / 2 * 5 / 20
    assert np.all(np.abs(draws.mean(axis=0) - x) < step * 0.125 + 1e-7)


@pytest.mark.parametrize("fraction", [0.001, 0.1, 0.5, 0.9, 0.999])
def test_int8_stochastic_rounds_up_with_the_fractional_part_as_probability(fraction: float) -> None:
    """``t = 100 + fraction`` steps above ``lo``: rounded up with probability ``fraction``."""
    n = 200_000
    x = np.full(n, 100 + fraction, dtype=np.float64)
    x[:2] = 0.0, 255.0  # lo = 0, step = 1
    q = Codec("int8", stochastic=True, min_elements=0).encode(
        x.astype(np.float32), np.random.default_rng(9)
    )["q"][2:]
    assert set(np.unique(q).tolist()) <= {100, 101}
    sigma = np.sqrt(fraction * (1 - fraction) / n)
    assert abs(np.mean(q == 101) - fraction) < 5 * sigma + 2.0**-16


def test_int8_stochastic_rounding_is_reproducible_from_the_generator(x: np.ndarray) -> None:
    codec = Codec("int8", stochastic=True, min_elements=0)
    first = codec.encode(x, np.random.default_rng(10))["q"]
    assert np.array_equal(first, codec.encode(x, np.random.default_rng(10))["q"])
    assert not np.array_equal(first, codec.encode(x, np.random.default_rng(11))["q"])


def test_constant_tensor_is_exact() -> None:
    x = np.full((50, 50), 0.25, dtype=np.float32)
    assert np.array_equal(decode_parts(Codec("int8", min_elements=0).encode(x)), x)


@pytest.mark.parametrize(("fraction", "positions"), [(0.1, "mask"), (0.01, "idx")])
@pytest.mark.parametrize("value_dtype", ["float32", "float16"])
def test_topk_keeps_the_largest_entries(fraction: float, positions: str, value_dtype: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 500)).astype(np.float32)  # large: the sampled threshold path
    parts = Codec("topk", fraction=fraction, value_dtype=value_dtype, min_elements=0).encode(x)
    assert positions in parts and parts["val"].dtype == np.dtype(value_dtype)
    y = decode_parts(parts)
    k = int(np.ceil(fraction * x.size))
    kept = np.flatnonzero(y)
    assert kept.size == k
    expected = np.argsort(np.abs(x).reshape(-1))[-k:]
    assert set(kept.tolist()) == set(expected.tolist())
    tol = 2.0**-11 if value_dtype == "float16" else 0.0
    flat = x.reshape(-1)
    assert np.all(np.abs(y.reshape(-1)[kept] - flat[kept]) <= tol * np.abs(flat[kept]))


@pytest.mark.parametrize("k", [1, 7, 1000, 30000, 60000])
def test_top_k_sampled_threshold_matches_full_partition(k: int) -> None:
    magnitude = np.abs(np.random.default_rng(k).standard_normal(250_000)).astype(np.float32)
    got = np.sort(codecs.top_k(-magnitude, k))
    want = np.sort(np.argpartition(magnitude, magnitude.size - k)[magnitude.size - k :])
    assert np.array_equal(got, want)


def _reference_top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Sorted positions of the k largest magnitudes: NaN first, ties to the lowest positions."""
    mags = np.abs(values.astype(np.float64))
    order = np.lexsort((np.arange(values.size), -np.nan_to_num(mags, nan=0.0), ~np.isnan(mags)))
    return np.sort(order[:k])


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("ties", np.random.default_rng(6).integers(-20, 21, 300_000).astype(np.float32)),
        ("all equal", np.full(200_000, -0.5, dtype=np.float32)),
        ("mostly zero", np.where(np.arange(200_000) % 50 == 0, 1.0, 0.0).astype(np.float32)),
        ("nan and inf", np.r_[np.full(10, np.nan), np.full(5, -np.inf), np.ones(150_000)]),
        ("tiny", np.array([0.5, -2.0, 2.0, 0.0, -0.5], dtype=np.float32)),
    ],
)
@pytest.mark.parametrize("fraction", [1e-4, 0.01, 0.1, 0.25, 0.6])
def test_top_k_is_exact_with_ties_to_the_lowest_positions(
    name: str, values: np.ndarray, fraction: float
) -> None:
    k = max(1, int(np.ceil(fraction * values.size)))
    got, entries = codecs.select(values, k)
    assert got.size == k and np.all(np.diff(got) > 0)
    assert np.array_equal(got, _reference_top_k(values, k)), name
    assert np.array_equal(entries, values[got], equal_nan=True)


@pytest.mark.parametrize("k", [0, 5, 6, 1000])
def test_top_k_of_k_at_least_size_keeps_everything(k: int) -> None:
    values = np.array([3.0, -1.0, 0.0, 2.0, -5.0], dtype=np.float32)
    assert codecs.top_k(values, k).tolist() == list(range(min(k, values.size)))
    parts = Codec("topk", fraction=1.0, value_dtype="float32", min_elements=0).encode(values)
    assert np.array_equal(decode_parts(parts), values)


def test_top_k_reads_few_candidates_beyond_k(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampled threshold leaves ~k candidates, even when each column has its own scale.

    A fixed stride of 1000 would sample one column of this 1000 x 1000 matrix only.
    """
    scales = np.geomspace(1e-3, 1.0, 1000, dtype=np.float32)
    x = (np.random.default_rng(7).standard_normal((1000, 1000)) * scales).astype(np.float32)
    seen: list[int] = []
    exact = codecs._exact

    def spy(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        seen.append(values.size)
        return exact(values, k)

    monkeypatch.setattr(codecs, "_exact", spy)
    for fraction, bound in ((0.1, 1.15), (0.01, 1.45)):
        k = int(fraction * x.size)
        assert np.array_equal(codecs.top_k(x.reshape(-1), k), _reference_top_k(x.reshape(-1), k))
        assert k <= seen[-1] <= bound * k


def test_top_k_is_deterministic() -> None:
    x = np.random.default_rng(8).standard_normal(400_000).astype(np.float32)
    first = Codec("topk", fraction=0.05, min_elements=0).encode(x)
    again = Codec("topk", fraction=0.05, min_elements=0).encode(x.copy())
    assert all(np.array_equal(first[part], again[part]) for part in first)


@pytest.mark.parametrize("density", [0.0, 0.01, 0.05, 0.0999, 0.1, 0.1001, 1.0])
@pytest.mark.parametrize("n", [0, 1, 77, 100_000])
def test_positions_of_equals_flatnonzero(density: float, n: int) -> None:
    mask = np.random.default_rng(n).random(n) < density
    if n == 100_000 and density == 0.1:
        mask[:] = np.arange(n) % 10 == 3  # exactly 10 %
    assert np.array_equal(codecs.positions_of(mask), np.flatnonzero(mask))


def test_topk_int8_quantizes_the_kept_values() -> None:
    x = np.random.default_rng(3).standard_normal(10_000).astype(np.float32)
    parts = Codec("topk_int8", fraction=0.1, min_elements=0).encode(x)
    assert parts["q"].dtype == np.uint8 and parts["q"].size == 1000
    y = decode_parts(parts)
    kept = y != 0
    step = float(parts["step"][0])
    assert np.count_nonzero(kept) == 1000
    assert np.all(np.abs(y[kept] - x[kept]) <= step / 2 * (1 + 1e-4))


def test_small_and_integer_arrays_travel_raw() -> None:
    codec = Codec("int8", min_elements=100)
    small = np.arange(99, dtype=np.float32)
    ints = np.arange(1000, dtype=np.int64)
    assert set(codec.encode(small)) == {"raw"} and set(codec.encode(ints)) == {"raw"}
    assert decode_parts(codec.encode(ints)).dtype == np.int64


@pytest.mark.parametrize("name", ["fp16", "int8", "topk", "topk_int8"])
def test_compressed_sizes(name: str) -> None:
    x = np.random.default_rng(4).standard_normal(1 << 16).astype(np.float32)
    size = sum(p.nbytes for p in Codec(name, fraction=0.1, min_elements=0).encode(x).values())
    ratio = x.nbytes / size
    assert ratio >= {"fp16": 2.0, "int8": 3.99, "topk": 12.0, "topk_int8": 17.0}[name]


def test_arrays_round_trip_with_names_in_order(x: np.ndarray) -> None:
    names = ["dense/kernel", "dense/bias", "out::weird"]
    arrays = [x, np.ones(3, np.float32), x[:10] * 2]
    flat = encode_arrays(names, arrays, Codec("int8", min_elements=20))
    got_names, got = decode_arrays(flat)
    assert got_names == names
    assert [a.shape for a in got] == [a.shape for a in arrays]
    assert np.array_equal(got[1], arrays[1])


@pytest.mark.parametrize("name", ["topk", "int8", "topk_int8"])
def test_error_feedback_residual_sums_back(name: str) -> None:
    """Sum of decoded updates + last residual == sum of the updates (nothing is lost)."""
    rng = np.random.default_rng(5)
    codec = Codec(name, fraction=0.05, min_elements=0)
    residual = None
    sent = np.zeros((64, 64))
    total = np.zeros((64, 64))
    for _ in range(6):
        update = rng.standard_normal((64, 64)).astype(np.float32)
        flat, residual = codecs.encode_with_feedback(["w"], [update], codec, residual)
        sent += decode_arrays(flat)[1][0]
        total += update
    assert residual is not None
    assert np.abs(sent + residual[0] - total).max() < 1e-4
    assert np.abs(residual[0]).max() > 1e-3  # something was held back


def test_error_feedback_sends_what_was_held_back() -> None:
    """An entry too small to be sent once is sent once its residual has grown."""
    codec = Codec("topk", fraction=0.5, value_dtype="float32", min_elements=0)
    update = np.array([1.0, 0.4], dtype=np.float32)
    flat, residual = codecs.encode_with_feedback(["w"], [update], codec, None)
    assert decode_arrays(flat)[1][0].tolist() == [1.0, 0.0]
    flat, residual = codecs.encode_with_feedback(["w"], [np.zeros(2, np.float32)], codec, residual)
    assert decode_arrays(flat)[1][0].tolist() == pytest.approx([0.0, 0.4])


@pytest.mark.parametrize(
    "parts",
    [
        {"q": np.zeros(10, np.uint8), "lo": np.zeros(3, np.float32), "step": np.ones(3)},
        {"shape": np.array([4]), "idx": np.array([9], np.uint16), "val": np.ones(1)},
        {"shape": np.array([4]), "mask": np.packbits([1, 1, 0, 0]), "val": np.ones(1)},
        {"shape": np.array([4]), "val": np.ones(1)},
    ],
)
def test_malformed_parts_are_rejected(parts: dict[str, np.ndarray]) -> None:
    with pytest.raises(UpdateRejected):
        decode_parts(parts)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "gzip"}, "compression.name must be one of"),
        ({"name": "topk", "fraction": 0.0}, "compression.fraction must be a number in (0, 1]"),
        ({"down": "topk"}, "compression.down must be one of none, fp16, int8"),
        ({"min_elements": -1}, "compression.min_elements must be an integer >= 0"),
        ({"value_dtype": "int4"}, "compression.value_dtype must be one of"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        codecs.codecs_from_options(options)


@pytest.mark.parametrize("name", ["none", "fp16", "int8", "topk", "topk_int8"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_arrays_are_refused_by_every_codec(name: str, bad: float) -> None:
    x = np.linspace(-1, 1, 2048, dtype=np.float32)
    x[7] = bad
    with pytest.raises(UpdateRejected, match=r"array 'w' has 1 non-finite value"):
        encode_arrays(["w"], [x], Codec(name, min_elements=0))


@pytest.mark.parametrize("name", ["int8", "topk_int8"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_int8_covers_the_whole_float32_range(name: str, stochastic: bool) -> None:
    big = float(np.finfo(np.float32).max)
    x = np.linspace(-3e38, 3e38, 4096).astype(np.float32)
    x[[0, -1]] = -big, big
    codec = Codec(name, fraction=1.0, stochastic=stochastic, min_elements=0)
    _, (y,) = decode_arrays(encode_arrays(["w"], [x], codec, np.random.default_rng(0)))
    assert np.isfinite(y).all()
    step = (2 * big) / 255
    assert np.abs(y.astype(np.float64) - x).max() <= (1.0 if stochastic else 0.5) * step * 1.001


def test_a_non_finite_update_leaves_the_residual_as_it_was() -> None:
    codec = Codec("topk", fraction=0.1, min_elements=0)
    update = np.random.default_rng(1).standard_normal(2048).astype(np.float32)
    _, residual = codecs.encode_with_feedback(["w"], [update], codec, None)
    kept = [r.copy() for r in residual]
    poisoned = update.copy()
    poisoned[3] = np.nan
    with pytest.raises(UpdateRejected):
        codecs.encode_with_feedback(["w"], [poisoned], codec, residual)
    assert np.array_equal(residual[0], kept[0])
    flat, residual = codecs.encode_with_feedback(["w"], [update], codec, residual)
    assert np.isfinite(decode_arrays(flat)[1][0]).all() and np.isfinite(residual[0]).all()
