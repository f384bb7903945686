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
