"""Aggregation throughput: K client updates of P float32 parameters folded by WeightedMean.

For every (K, P) it times ``fedflower.aggregation`` three ways and reports GB/s of update data
read (K * P * 4 bytes / seconds), next to the bandwidth of a NumPy memory copy (``np.copyto``,
bytes copied per second) measured right before:

* ``stream``: ``WeightedMean.add`` once per client, then ``result`` (default: float32 sums);
* ``mean``: ``weighted_mean`` (what the strategies call, the default), 8 updates per pass;
* ``float64``: ``weighted_mean(..., accumulator="float64")``, float64 sums (order-exact).

``err`` is the default's error against the float64 sums on the same data: the largest
absolute difference divided by the largest absolute value of the mean (max-norm relative).
Times are the CPU time of this single-threaded process (``time.process_time``), best of 3 or
more, for the copy as for the aggregation: other jobs on a shared machine then disturb the
ratio less than wall time would (they still compete for memory bandwidth).

It also measures, with ``tracemalloc``, the peak memory the aggregation allocates: it must
not grow with K (updates are streamed into one accumulator, never stacked).

Updates cycle through a pool of distinct arrays of about 256 MiB (so the benchmark needs
little memory); for P >= 1e5 and K >= 100, and for P >= 1e6, the updates come from RAM, not
from the CPU caches.

    python bench/aggregation.py            # K = 10, 100, 1000 x P = 1e4 .. 1e7 (a few minutes)
    python bench/aggregation.py --quick    # a smaller grid

The table and the summary lines go to ``bench/results/aggregation.{csv,json,md}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fedflower.aggregation import WeightedMean, weighted_mean

GB = 1e9
RESULTS = Path(__file__).resolve().parent / "results"
clock = time.process_time
POOL_BYTES = 256 * 2**20  # distinct update data, larger than the CPU caches
MAX_ELEMENTS = 2e9  # skip (K, P) pairs that would read more than 8 GB


def memcpy_bandwidth(nbytes: int = 128 * 2**20, repeats: int = 10) -> float:
    """Best-of-``repeats`` ``np.copyto`` bandwidth in GB/s (bytes copied per second)."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the pages once
    best = float("inf")
    for _ in range(repeats):
        t = clock()
        np.copyto(dst, src)
        best = min(best, clock() - t)
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
    "float64": lambda pool, k: weighted_mean(updates(pool, k), accumulator="float64"),
}


def best_seconds(method: Method, pool: list[list[np.ndarray]], k: int, budget: float) -> float:
    """Best wall time of ``method(pool, k)`` over 3 or more runs (more within ``budget`` s)."""
    best, spent, runs = float("inf"), 0.0, 0
    while runs < 3 or (spent < budget and runs < 20):
        t = clock()
        method(pool, k)
        dt = clock() - t
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


def relative_error(pool: list[list[np.ndarray]], k: int) -> float:
    """Max-norm relative error of the default mean against the float64 sums (before their cast
    to float32, so the float32 arithmetic's own error is measured).
    """
    got = weighted_mean(updates(pool, k))
    acc = WeightedMean("float64")
    for arrays, weight in updates(pool, k):
        acc.add(arrays, weight)
    assert acc._sums is not None
    exact = [s / acc.total_weight for s in acc._sums]
    top = max(float(np.max(np.abs(e))) for e in exact)
    diff = max(float(np.max(np.abs(g - e))) for g, e in zip(got, exact, strict=True))
    return diff / top


def measure_row(pool: list[list[np.ndarray]], k: int, p: int, budget: float) -> dict[str, Any]:
    """One (K, P) row: copy bandwidth, each method's GB/s and share of it, peak memory, error."""
    copy = memcpy_bandwidth()
    row: dict[str, Any] = {"K": k, "P": p, "copy_gb_s": round(copy, 3)}
    for name, method in METHODS.items():
        rate = k * p * 4 / best_seconds(method, pool, k, budget) / GB
        row[f"{name}_gb_s"] = round(rate, 3)
        row[f"{name}_pct"] = round(100 * rate / copy, 1)
    row["peak_mib"] = round(peak_bytes(METHODS["mean"], pool, k) / 2**20, 2)
    row["acc_mib"] = round(p * 4 / 2**20, 2)
    row["err"] = float(f"{relative_error(pool, k):.3g}")
    return row


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """The summary lines: per method, the share of the copy bandwidth for P >= 1e6."""
    lines = []
    for name in METHODS:
        values = [r[f"{name}_pct"] for r in rows if r["P"] >= 10**6]
        if values:
            lines.append(
                f"{name:>7}, P >= 1e6 (updates read from RAM): median {np.median(values):.0f}% "
                f"(range {min(values):.0f}% .. {max(values):.0f}%) of the copy bandwidth"
            )
    errors = [r["err"] for r in rows]
    if errors:
        lines.append(
            f"   mean vs float64 sums: max-norm relative error {max(errors):.2g} "
            f"(median {np.median(errors):.2g})"
        )
    return lines


def write(rows: list[dict[str, Any]], lines: list[str]) -> None:
    """``bench/results/aggregation.{csv,json,md}``."""
    RESULTS.mkdir(exist_ok=True)
    machine = f"{os.cpu_count()}-core {platform.machine()}, shared with other jobs"
    stem = RESULTS / "aggregation"
    stem.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "rows": rows, "summary": lines}, indent=1) + "\n"
    )
    with stem.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    md = [
        f"Machine: {machine}. CPU time, best of 3 or more; GB/s of update data read "
        "(% of the np.copyto bandwidth measured right before).",
        "",
        "| K x P | copy GB/s | `stream` | `mean` (default) | `float64` | peak MiB | err |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    md += [
        f"| {r['K']} x {r['P']:.0e} | {r['copy_gb_s']:.2f} "
        + "".join(f"| {r[m + '_gb_s']:.2f} ({r[m + '_pct']:.0f} %) " for m in METHODS)
        + f"| {r['peak_mib']:.2f} | {r['err']:.1e} |"
        for r in rows
    ]
    md += ["", "```", *lines, "```"]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 10, 100 and P = 1e4 .. 1e6")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per timing")
    args = parser.parse_args()
    ks = [10, 100] if args.quick else [10, 100, 1000]
    ps = [10**4, 10**5, 10**6] if args.quick else [10**4, 10**5, 10**6, 10**7]

    print("GB/s of update data read (K * P * 4 bytes / CPU s) and its % of the np.copyto")
    print("bandwidth (128 MiB, bytes copied per CPU s) measured right before each row;")
    print("peak = memory allocated by `mean` (tracemalloc); acc = its float32 accumulator;")
    print("err = `mean` vs float64 sums, max-norm relative\n")
    head = "".join(f"{m:>15}" for m in METHODS)
    print(f"{'K':>5} {'P':>7} {'copy':>6}{head} {'peak MiB':>9} {'acc MiB':>8} {'err':>8}")
    rows = []
    for p in ps:
        pool = make_pool(p, max(ks))
        for k in ks:
            if k * p > MAX_ELEMENTS:
                continue
            row = measure_row(pool, k, p, args.budget)
            rows.append(row)
            cells = "".join(
                f"{row[m + '_gb_s']:>6.2f} ({row[m + '_pct']:>3.0f}%)".rjust(15) for m in METHODS
            )
            print(
                f"{k:>5} {p:>7.0e} {row['copy_gb_s']:>6.2f}{cells} {row['peak_mib']:>9.2f} "
                f"{row['acc_mib']:>8.2f} {row['err']:>8.1e}",
                flush=True,
            )
        print()
    lines = summary(rows)
    print("\n".join(lines))
    write(rows, lines)


if __name__ == "__main__":
    main()
