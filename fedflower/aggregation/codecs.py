"""Codecs for model updates and models in pure NumPy: half precision, 8 bits, top-k.

Each array is encoded on its own into a few named parts (plain NumPy arrays, so a Flower
``ArrayRecord`` carries them as they are) and decoded from those parts alone:

* ``fp16``: half precision (2x fewer bytes), as FLSim's half-precision channel;
* ``int8``: affine 8-bit quantization, ``x ~ lo + step * q`` with ``q`` in 0..255 and
  ``step = (max - min) / 255``, per tensor or per output channel (the last axis), rounding to
  nearest (error <= step / 2) or stochastic (unbiased, error < step; QSGD, arXiv:1610.02132),
  as FLSim's scalar-quantization channel and TFF's 8-bit ``compression_aggregator``;
* ``topk``: exactly ``ceil(fraction * size)`` largest-magnitude entries of an update, ties
  going to the lowest positions (Deep Gradient Compression, arXiv:1712.01887, which also gives
  the sampled threshold used to find them without sorting), positions as a bit mask or as
  indices (whichever is smaller), values in float16 or float32;
* ``topk_int8``: top-k, then the kept values in 8 bits.

Arrays with fewer than ``min_elements`` entries (biases) and non-float arrays travel as they
are. Error feedback (the residual ``x - decode(encode(x))`` added to the next update; Stich et
al., arXiv:1809.07599; Karimireddy et al., arXiv:1901.09847) is :func:`encode_with_feedback`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedflower.checks import check_choice, check_number
from fedflower.errors import UpdateRejected

Parts = dict[str, np.ndarray]

CODECS = ("none", "fp16", "int8", "topk", "topk_int8")
MODEL_CODECS = ("none", "fp16", "int8")
"""Codecs for models (server -> client): top-k is for updates only."""
VALUE_DTYPES = ("float32", "float16")
SEP = "::"
"""Separator of an array's name and its part's name in a flat record (``"3::q"``)."""

BLOCK = 1 << 15
"""Elements per block in the quantization loops: a block's scratch stays in the CPU cache."""
SCAN_BLOCK = 1 << 17
"""Elements per block of the top-k candidate scan (fewer Python steps; scratch still in L2)."""
LEVELS = 255
DENSE_NONZERO_FROM = 33
"""Masks more than 1 / 33 (3 %) true are padded by :func:`positions_of` (below: not worth it)."""
SAMPLE = 1 << 14
"""Magnitudes sampled to estimate the top-k threshold (DGC's hierarchical selection)."""
SAMPLE_SIGMAS = 4.0
"""How far (binomial standard deviations) below the expected count the threshold is taken."""
SAMPLE_SEED = 0x7F4A
"""Seed of the sampled positions: the same input always gives the same selection."""


@dataclass(frozen=True)
class Codec:
    """How arrays are encoded.

    Parameters
    ----------
    name : {"none", "fp16", "int8", "topk", "topk_int8"}
        The codec.
    fraction : float
        Share of entries top-k keeps, in (0, 1].
    per_channel : bool
        int8: one scale and zero point per output channel (last axis) instead of per tensor.
    stochastic : bool
        int8: stochastic rounding (unbiased) instead of rounding to nearest.
    min_elements : int
        Arrays with fewer entries travel uncompressed.
    value_dtype : {"float16", "float32"}
        topk: precision of the kept values.
    """

    name: str = "none"
    fraction: float = 0.1
    per_channel: bool = False
    stochastic: bool = False
    min_elements: int = 1024
    value_dtype: str = "float16"

    def __post_init__(self) -> None:
        check_choice("compression.name", self.name, CODECS)
        check_number("compression.fraction", self.fraction, minimum=0.0, maximum=1.0, min_open=True)
        check_number("compression.min_elements", self.min_elements, minimum=0, integer=True)
        check_choice("compression.value_dtype", self.value_dtype, VALUE_DTYPES)
        check_choice("compression.per_channel", self.per_channel, (False, True))
        check_choice("compression.stochastic", self.stochastic, (False, True))

    @property
    def sparse(self) -> bool:
        """Whether the codec keeps only some entries (it is meant for updates, not models)."""
        return self.name.startswith("topk")

    def encode(self, x: np.ndarray, rng: np.random.Generator | None = None) -> Parts:
        """The parts of ``x`` (``rng`` drives stochastic rounding)."""
        x = np.asarray(x)
        if self.name == "none" or x.size < self.min_elements or not _floating(x):
            return {"raw": x}
        if self.name == "fp16":
            return {"f16": x.astype(np.float16)}
        x = np.asarray(x, dtype=np.float32)
        if self.name == "int8":
            return quantize(x, self.per_channel, self._rng(rng))
        if self.name == "topk":
            return sparsify(x, self.fraction, self.value_dtype)
        parts = sparsify(x, self.fraction, "float32")
        parts.update(quantize(parts.pop("val"), False, self._rng(rng)))
        return parts

    def _rng(self, rng: np.random.Generator | None) -> np.random.Generator | None:
        if not self.stochastic:
            return None
        return rng if rng is not None else np.random.default_rng()


def _floating(x: np.ndarray) -> bool:
    return bool(np.issubdtype(x.dtype, np.floating))


def _row_blocks(rows: int, cols: int) -> Iterable[slice]:
    step = max(1, BLOCK // max(cols, 1))
    return (slice(s, min(s + step, rows)) for s in range(0, rows, step))


def quantize(x: np.ndarray, per_channel: bool, rng: np.random.Generator | None = None) -> Parts:
    """8-bit affine quantization of a float32 array: parts ``q`` (uint8), ``lo``, ``step``.

    With ``per_channel`` and at least two dimensions, ``lo`` and ``step`` hold one value per
    entry of the last axis; otherwise one each. Without ``rng``, rounding to nearest
    (``|x - decode| <= step / 2``); with it, stochastic rounding (unbiased, error < ``step``):
    ``floor(t + u)`` with ``t = (x - lo) / step`` and ``u`` uniform on the 65,536 midpoints
    ``(r + 1/2) / 2**16``, ``r`` 16 raw random bits (a quarter of one draw of the generator
    each), so ``E[floor(t + u)] = t`` to within ``2**-17`` of a step, finer than float32
    resolves ``t`` near 255. Work goes block by block through cache-sized scratch buffers.
    A range wider than float32 holds (``max - min`` above 3.4e38, e.g. +3e38 and -3e38 in one
    tensor) is worked out in float64, so every finite float32 tensor has a finite scale.
    """
    cols = x.shape[-1] if per_channel and x.ndim >= 2 else 1
    flat = x.reshape(-1, cols)
    lo = flat.min(axis=0)
    with np.errstate(over="ignore"):
        span = flat.max(axis=0) - lo
    work = np.float32 if np.isfinite(span).all() else np.float64
    if work is np.float64:
        span = flat.max(axis=0).astype(np.float64) - lo
    step = (span / LEVELS).astype(np.float32)
    inv = np.divide(LEVELS, span, out=np.zeros_like(span), where=span > 0).astype(work)
    q = np.empty(flat.shape, dtype=np.uint8)
    tmp = np.empty(min(flat.size, BLOCK + cols), dtype=work)
    noise = None if rng is None else np.empty_like(tmp)
    for rows in _row_blocks(flat.shape[0], cols):
        block = flat[rows]
        t = tmp[: block.size].reshape(block.shape)
        np.subtract(block, lo, out=t, dtype=work)
        np.multiply(t, inv, out=t)
        if rng is None or noise is None:
            np.add(t, 0.5, out=t)  # t >= 0: truncation below rounds to nearest
        else:
            _add_uniform(t, rng, noise[: block.size].reshape(block.shape))
        np.minimum(t, LEVELS, out=t)
        q[rows] = t
    return {"q": q.reshape(x.shape), "lo": lo, "step": step}


def _add_uniform(t: np.ndarray, rng: np.random.Generator, scratch: np.ndarray) -> None:
    """``t += (r + 1/2) / 2**16`` in place, ``r`` uniform 16-bit integers from ``rng``'s bits."""
    bits = rng.bit_generator.random_raw(-(-t.size // 4)).view(np.uint16)[: t.size]
    np.multiply(bits.reshape(t.shape), t.dtype.type(2.0**-16), out=scratch)
    np.add(t, scratch, out=t)
    np.add(t, t.dtype.type(2.0**-17), out=t)


def dequantize(parts: Mapping[str, np.ndarray]) -> np.ndarray:
    """The float32 array :func:`quantize` encoded."""
    q = parts["q"]
    lo, step = np.asarray(parts["lo"]), np.asarray(parts["step"])
    cols = lo.size
    if q.ndim == 0 or q.size % cols or (cols > 1 and q.shape[-1] != cols):
        raise UpdateRejected(f"quantized array of shape {q.shape} with {cols} scales")
    flat = q.reshape(-1, cols)
    with np.errstate(over="ignore"):
        wide = not np.isfinite(np.float32(LEVELS) * step.astype(np.float32)).all()
    if wide:
        return _dequantize_wide(flat, lo, step).reshape(q.shape)
    out = np.empty(flat.shape, dtype=np.float32)
    for rows in _row_blocks(flat.shape[0], cols):
        o = out[rows]
        np.multiply(flat[rows], step, out=o, dtype=np.float32)
        np.add(o, lo, out=o)
    return out.reshape(q.shape)


def _dequantize_wide(flat: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``lo + step * q`` in float64 for a range wider than float32 holds, clipped into it."""
    wide = flat * step.astype(np.float64) + lo.astype(np.float64)
    big = float(np.finfo(np.float32).max)
    return np.clip(wide, -big, big).astype(np.float32)


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Sorted positions of the ``k`` entries of the 1-D ``values`` largest in magnitude.

    Exactly ``min(k, size)`` positions; among entries tied at the boundary magnitude the first
    ones (lowest positions) are kept, so the result is deterministic. NaN counts as larger than
    any number. See :func:`select` for how they are found.
    """
    return select(values, k)[0]


def select(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k`'s positions and the entries of ``values`` there.

    Deep Gradient Compression's sampled threshold (arXiv:1712.01887): the ``k``-th largest
    magnitude is estimated on :data:`SAMPLE` entries drawn at random (a fixed seed, so the
    same input gives the same output; :func:`_sampled_threshold`), a little low so that
    slightly more than ``k`` entries pass it; the candidates passing it and their entries are
    collected block by block in one pass (no full-size temporaries), and the exact ``k``-th
    largest magnitude among them (``np.partition``) fixes the selection. If the estimate was
    too high (fewer than ``k`` candidates, rare), every entry is a candidate. Nothing is
    sorted: the candidates come in position order.
    """
    n = values.size
    if k >= n:
        return np.arange(n), values
    if k <= 0:
        return np.arange(0), values[:0]
    if n >= 8 * SAMPLE and k <= n // 4:
        candidates, entries = _above(values, _sampled_threshold(values, k))
        if candidates.size >= k:
            positions, kept = _exact(entries, k)
            return candidates[positions], kept
    return _exact(values, k)


def _sampled_threshold(values: np.ndarray, k: int) -> float:
    """A magnitude that a little more than ``k`` of the entries reach (with high probability).

    One magnitude from each of :data:`SAMPLE` equal strata of the array, at a random position
    within it (stratified: no aliasing with a matrix's columns as a fixed stride would have,
    and memory read in order), and of these the ``j``-th largest, ``j`` being the expected
    count ``SAMPLE * k / n`` plus :data:`SAMPLE_SIGMAS` standard deviations of a binomial
    count (stratification only narrows it): the fraction of entries reaching it falls short of
    ``k / n`` with probability about 3e-5 (then :func:`select` takes every entry as a
    candidate) and exceeds it by ``SAMPLE_SIGMAS * sqrt(p (1 - p) / SAMPLE)`` at most on
    average (+9 % at 10 %, +31 % at 1 %).
    """
    n = values.size
    p = k / n
    j = min(SAMPLE, int(SAMPLE * p + SAMPLE_SIGMAS * np.sqrt(SAMPLE * p * (1 - p))) + 1)
    sample = np.abs(values[_sample_positions(n)])
    return float(np.partition(sample, SAMPLE - j)[SAMPLE - j])


@functools.lru_cache(maxsize=64)
def _sample_positions(n: int) -> np.ndarray:
    """One random position in each of :data:`SAMPLE` equal strata of ``range(n)`` (read-only)."""
    stride = n // SAMPLE
    positions = np.random.default_rng(SAMPLE_SEED).integers(0, stride, SAMPLE)
    positions += np.arange(0, SAMPLE * stride, stride)
    positions.flags.writeable = False
    return positions


def _above(values: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in order) where ``|values| >= threshold`` or is NaN, and the entries there.

    Block by block: each block's magnitudes, comparison and gather stay in the CPU cache.
    """
    scratch = np.empty(min(values.size, SCAN_BLOCK), dtype=values.dtype)
    below = np.empty(scratch.size, dtype=bool)
    positions, entries = [], []
    for start in range(0, values.size, SCAN_BLOCK):
        block = values[start : start + SCAN_BLOCK]
        mag, low = scratch[: block.size], below[: block.size]
        np.abs(block, out=mag)
        np.less(mag, threshold, out=low)
        hits = positions_of(np.logical_not(low, out=low))
        entries.append(block[hits])
        hits += start
        positions.append(hits)
    return np.concatenate(positions), np.concatenate(entries)


def _exact(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in order) and entries of the ``k`` of ``values`` largest in magnitude."""
    if values.size == k:
        return np.arange(k), values
    mags = np.abs(values)
    kth = np.partition(mags, mags.size - k)[mags.size - k]
    if np.isnan(kth):  # k or more NaNs: the first k of them
        positions = np.flatnonzero(np.isnan(mags))[:k]
        return positions, values[positions]
    keep = ~(mags <= kth)  # larger, or NaN
    ties = np.flatnonzero(mags == kth)[: k - int(np.count_nonzero(keep))]
    keep[ties] = True
    positions = positions_of(keep)
    return positions, values[positions]


def positions_of(mask: np.ndarray) -> np.ndarray:
    """``np.flatnonzero`` of a 1-D boolean ``mask``, at a cost that does not jump with density.

    NumPy's ``nonzero`` takes a branching loop when at most 10 % of the entries are true,
    which mispredicts at 3-10 % and then costs up to 2.5x its branch-free loop (NumPy 2.4,
    x86-64). Such masks are copied with enough true entries appended past their end to
    cross 10 %, and those are cut off.
    """
    n = mask.size
    count = int(np.count_nonzero(mask))
    if count <= n // DENSE_NONZERO_FROM or count > n // 10:
        return np.flatnonzero(mask)
    padded = np.empty(n + int((n / 10 - count) / 0.9) + 64, dtype=bool)
    padded[:n] = mask
    padded[n:] = True
    return np.flatnonzero(padded)[:count]


def sparsify(x: np.ndarray, fraction: float, value_dtype: str = "float32") -> Parts:
    """Top-k of ``x``: parts ``shape``, ``mask`` (packed bits) or ``idx``, and ``val``.

    ``k = ceil(fraction * size)``, exactly (:func:`top_k`); positions travel as a bit mask
    when that is smaller than their indices (fraction above 1/32 with uint32 indices).
    """
    flat = x.reshape(-1)
    n = flat.size
    k = max(1, int(np.ceil(fraction * n)))
    keep, values = select(flat, k)
    parts: Parts = {"shape": np.asarray(x.shape, dtype=np.int64)}
    index_dtype = np.uint16 if n <= 1 << 16 else np.uint32
    if n / 8 < k * np.dtype(index_dtype).itemsize:
        mask = np.zeros(n, dtype=bool)
        mask[keep] = True
        parts["mask"] = np.packbits(mask)
    else:
        parts["idx"] = keep.astype(index_dtype)
    parts["val"] = values.astype(value_dtype)
    return parts


def densify(parts: Mapping[str, np.ndarray], values: np.ndarray) -> np.ndarray:
    """The dense float32 array of :func:`sparsify`'s ``parts`` holding ``values``."""
    shape = tuple(int(s) for s in parts["shape"])
    n = int(np.prod(shape))
    out = np.zeros(n, dtype=np.float32)
    if "mask" in parts:
        idx = positions_of(np.unpackbits(parts["mask"], count=n).view(bool))
    else:
        idx = parts["idx"]
        if idx.size and int(idx.max()) >= n:
            raise UpdateRejected("top-k indices point outside the array")
    if idx.size != values.size:
        raise UpdateRejected("top-k positions and values differ in length")
    out[idx] = values
    return out.reshape(shape)


def widen(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 (exact from float16).

    NumPy's own conversion: vectorised for float16 on current CPUs, it beat a 65,536-entry
    lookup table, whose indices alone take 8 bytes per entry.
    """
    return np.asarray(x, dtype=np.float32)


def decode_parts(parts: Mapping[str, np.ndarray]) -> np.ndarray:
    """The array encoded as ``parts`` by :meth:`Codec.encode` (float32 unless sent raw)."""
    try:
        if "raw" in parts:
            return np.asarray(parts["raw"])
        if "f16" in parts:
            return widen(parts["f16"])
        if "shape" in parts:
            values = dequantize(parts) if "q" in parts else widen(parts["val"])
            return densify(parts, values.reshape(-1))
        return dequantize(parts)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise UpdateRejected(f"malformed compressed array ({sorted(parts)}): {exc}") from exc


def encode_arrays(
    names: Sequence[str],
    arrays: Sequence[np.ndarray],
    codec: Codec,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Encode named arrays into one flat mapping ``"<name>::<part>" -> array``.

    Raises
    ------
    UpdateRejected
        If a float array holds NaN or infinity: no codec represents them (int8 would turn the
        whole tensor into NaN, top-k would keep them first), so nothing is encoded.
    """
    check_finite(names, arrays)
    flat: dict[str, np.ndarray] = {}
    for name, x in zip(names, arrays, strict=True):
        for part, value in codec.encode(x, rng).items():
            flat[f"{name}{SEP}{part}"] = value
    return flat


def check_finite(names: Sequence[str], arrays: Sequence[np.ndarray]) -> None:
    """Raise ``UpdateRejected`` naming the first float array with NaN or infinite entries."""
    for name, x in zip(names, arrays, strict=True):
        x = np.asarray(x)
        if _floating(x) and not np.isfinite(x).all():
            bad = int(x.size - np.count_nonzero(np.isfinite(x)))
            raise UpdateRejected(
                f"array {name!r} has {bad} non-finite value(s) (NaN or infinity); "
                "the update is not sent"
            )


def decode_arrays(flat: Mapping[str, np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    """Names and decoded arrays of a mapping made by :func:`encode_arrays` (order kept)."""
    grouped: dict[str, Parts] = {}
    for key, value in flat.items():
        name, sep, part = key.rpartition(SEP)
        if not sep:
            raise UpdateRejected(f"compressed record entry {key!r} has no part name")
        grouped.setdefault(name, {})[part] = value
    return list(grouped), [decode_parts(parts) for parts in grouped.values()]


def encode_with_feedback(
    names: Sequence[str],
    arrays: Sequence[np.ndarray],
    codec: Codec,
    residual: Sequence[np.ndarray] | None,
    rng: np.random.Generator | None = None,
) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Encode ``arrays + residual`` and return it with the new residual (error feedback).

    The new residual is what the encoding lost, ``target - decode(encode(target))``, so the
    decoded updates plus the last residual sum to the sum of the updates: nothing is lost,
    only delayed. A non-finite ``arrays + residual`` raises ``UpdateRejected`` before anything
    is encoded: the caller keeps its residual, which stays finite.
    """
    target = list(arrays)
    if residual is not None:
        if [np.shape(r) for r in residual] != [np.shape(a) for a in target]:
            raise UpdateRejected("the error-feedback residual does not match the update's shapes")
        target = [
            np.add(a, r, dtype=np.result_type(a, np.float32))
            for a, r in zip(target, residual, strict=True)
        ]
    flat = encode_arrays(names, target, codec, rng)
    _, decoded = decode_arrays(flat)
    new_residual = [
        np.subtract(t, d, dtype=np.float32) for t, d in zip(target, decoded, strict=True)
    ]
    return flat, new_residual


def nbytes(arrays: Iterable[np.ndarray]) -> int:
    """Bytes of the arrays' data."""
    return int(sum(np.asarray(a).nbytes for a in arrays))


@dataclass
class CompressionOptions:
    """``conf/compression/<name>.yaml``: the update codec, the model codec and what they share.

    Hydra types the group with this dataclass (one schema per option, registered by
    :func:`fedflower.server.options.register`); building it checks the values.
    """

    name: str = "none"
    down: str = "none"
    min_elements: int = 1024
    per_channel: bool = False
    stochastic: bool = False
    fraction: float = 0.1
    value_dtype: str = "float16"
    error_feedback: bool = False

    def __post_init__(self) -> None:
        """Check the options by building both codecs."""
        self.codecs()
        check_choice("compression.error_feedback", self.error_feedback, (False, True))

    def codecs(self) -> tuple[Codec, Codec]:
        """The update codec (``name``) and the model codec (``down``)."""
        check_choice("compression.down", self.down, MODEL_CODECS)
        shared = {
            "fraction": self.fraction,
            "per_channel": self.per_channel,
            "stochastic": self.stochastic,
            "min_elements": self.min_elements,
        }
        return Codec(self.name, value_dtype=self.value_dtype, **shared), Codec(self.down, **shared)  # type: ignore[arg-type]


def codecs_from_options(options: Mapping[str, object]) -> tuple[Codec, Codec]:
    """The update and the model codec of the ``compression`` config group's options.

    ``name`` is the update codec, ``down`` the model codec; the other options are shared.
    """
    return CompressionOptions(**options).codecs()  # type: ignore[arg-type]
