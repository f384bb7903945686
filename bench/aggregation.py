"""Aggregation throughput: K client updates of P float32 parameters folded by WeightedMean.

For every (K, P) it times ``fedflower.aggregation`` three ways and reports GB/s of update data
read (K * P * 4 bytes / seconds), next to the bandwidth of a NumPy memory copy (``np.copyto``,
bytes copied per second) measured in the same run:

* ``stream``: ``WeightedMean.add`` once per client, then ``result`` (float64 accumulator);
* ``mean``: ``weighted_mean`` (what the strategies call), 8 updates per pass (float64);
* ``native``: ``weighted_mean(..., accumulator="native")``, float32 sums.

It also measures, with ``tracemalloc``, the peak memory the aggregation allocates: it must
not grow with K (updates are streamed into one accumulator, never stacked).

Updates cycle through a pool of distinct arrays of about 256 MiB (so the benchmark needs
little memory); for P >= 1e5 and K >= 100, and for P >= 1e6, the updates come from RAM, not
from the CPU caches.

    python bench/aggregation.py            # K = 10, 100, 1000 x P = 1e4 .. 1e7 (a few minutes)
    python bench/aggregation.py --quick    # a smaller grid
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable, Iterator

import numpy as np

from fedflower.aggregation import WeightedMean, weighted_mean

GB = 1e9
POOL_BYTES = 256 * 2**20  # distinct update data, larger than the CPU caches
MAX_ELEMENTS = 2e9  # skip (K, P) pairs that would read more than 8 GB


def memcpy_bandwidth(nbytes: int = 128 * 2**20, repeats: int = 10) -> float:
    """Best-of-``repeats`` ``np.copyto`` bandwidth in GB/s (bytes copied per second)."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the pages once
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return nbytes / best / GB


def make_pool(p: int, k: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Up to ``k`` distinct updates (at least 4, about ``POOL_BYTES`` in total), each a big
    layer plus a small bias (float32).
    """
    rng = np.random.default_rng(seed)
    bias = min(100, p // 10)
    count = min(k, max(4, -(-POOL_BYTES // (4 * p))))
    return [
        [
            rng.standard_normal(p - bias, dtype=np.float32),
            rng.standard_normal(bias, dtype=np.float32),
        ]
        for _ in range(count)
    ]


def updates(pool: list[list[np.ndarray]], k: int) -> Iterator[tuple[list[np.ndarray], float]]:
    """``k`` (update, weight) pairs; the updates cycle through the pool."""
    return ((pool[i % len(pool)], float(1 + i % 7)) for i in range(k))


Method = Callable[[list[list[np.ndarray]], int], list[np.ndarray]]


def stream(pool: list[list[np.ndarray]], k: int) -> list[np.ndarray]:
    acc = WeightedMean()
    for arrays, weight in updates(pool, k):
        acc.add(arrays, weight)
    return acc.result()


METHODS: dict[str, Method] = {
    "stream": stream,
    "mean": lambda pool, k: weighted_mean(updates(pool, k)),
    "native": lambda pool, k: weighted_mean(updates(pool, k), accumulator="native"),
}


def best_seconds(method: Method, pool: list[list[np.ndarray]], k: int, budget: float) -> float:
    """Best wall time of ``method(pool, k)`` over 3 or more runs (more within ``budget`` s)."""
    best, spent, runs = float("inf"), 0.0, 0
    while runs < 3 or (spent < budget and runs < 20):
        t = time.perf_counter()
        method(pool, k)
        dt = time.perf_counter() - t
        best, spent, runs = min(best, dt), spent + dt, runs + 1
    return best


def peak_bytes(method: Method, pool: list[list[np.ndarray]], k: int) -> int:
    """Peak bytes allocated while ``method(pool, k)`` runs (the pool is allocated before)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    method(pool, k)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 10, 100 and P = 1e4 .. 1e6")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per timing")
    args = parser.parse_args()
    ks = [10, 100] if args.quick else [10, 100, 1000]
    ps = [10**4, 10**5, 10**6] if args.quick else [10**4, 10**5, 10**6, 10**7]

    print("GB/s of update data read (K * P * 4 bytes / s) and its % of the np.copyto bandwidth")
    print("(128 MiB, bytes copied per second) measured right before each row; peak = memory")
    print("allocated by `mean` (tracemalloc); acc = one float64 accumulator\n")
    head = "".join(f"{m:>15}" for m in METHODS)
    print(f"{'K':>5} {'P':>7} {'copy':>6}{head} {'peak MiB':>9} {'acc MiB':>8}")
    ratios: dict[str, list[float]] = {m: [] for m in METHODS}
    for p in ps:
        pool = make_pool(p, max(ks))
        for k in ks:
            if k * p > MAX_ELEMENTS:
                continue
            copy = memcpy_bandwidth()
            cells = []
            for name, method in METHODS.items():
                seconds = best_seconds(method, pool, k, args.budget)
                rate = k * p * 4 / seconds / GB
                if p >= 10**6:
                    ratios[name].append(rate / copy)
                cells.append(f"{rate:>6.2f} ({100 * rate / copy:>3.0f}%)")
            peak = peak_bytes(METHODS["mean"], pool, k)
            print(
                f"{k:>5} {p:>7.0e} {copy:>6.2f}"
                + "".join(f"{c:>15}" for c in cells)
                + f" {peak / 2**20:>9.2f} {p * 8 / 2**20:>8.2f}"
            )
        print()
    for name, values in ratios.items():
        if values:
            median, low, high = (100 * f(values) for f in (np.median, min, max))
            print(
                f"{name:>6}, P >= 1e6 (updates read from RAM): median {median:.0f}% "
                f"(range {low:.0f}% .. {high:.0f}%) of the copy bandwidth"
            )


if __name__ == "__main__":
    main()
