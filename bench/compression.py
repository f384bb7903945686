"""Bytes and accuracy of update compression, and the codecs' speed.

Part 1 runs the same federated experiment (hospitals data, FedAvg, same seed) with every
compression setting, on the default MLP (Dense(128), ~2.8k parameters) and on a bigger one
(Dense(1024) x 2, ~1.07M parameters), and reports the bytes sent up and down (metered on
Flower's wire), their ratio to no compression, and the final test accuracy.

Part 2 times each codec's encode and decode of float32 updates of 1e6 and 1e7 elements on one
core, in CPU time of this process (``time.process_time``; best and median of ``--repeats``: the
machine may be shared, and the best run is the one least disturbed), next to ``np.copyto`` of
the same array as the machine's reference, against the goal of 1 GB/s of float32 input.

Results go to ``bench/results/compression.{csv,json,md}`` and ``compression.png``
(accuracy vs MB sent up), the codec speed to ``bench/results/codec_speed.{csv,json,md}``.

    python bench/compression.py                  # 10 clients x 10 rounds, both models
    python bench/compression.py --rounds 3 --models small
    OMP_NUM_THREADS=1 python bench/compression.py --no-runs   # codec speed only (~1 minute)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from fedflower.aggregation.codecs import Codec, decode_parts

RESULTS = Path(__file__).parent / "results"
SETTINGS: list[tuple[str, list[str]]] = [
    ("none", ["compression=none"]),
    ("fp16", ["compression=fp16"]),
    ("int8", ["compression=int8"]),
    ("topk 10% + EF", ["compression=topk", "compression.fraction=0.1"]),
    (
        "topk 10%, no EF",
        ["compression=topk", "compression.fraction=0.1", "compression.error_feedback=false"],
    ),
    ("topk 1% + EF", ["compression=topk", "compression.fraction=0.01"]),
    (
        "topk 1%, no EF",
        ["compression=topk", "compression.fraction=0.01", "compression.error_feedback=false"],
    ),
    ("topk_int8 10% + EF", ["compression=topk_int8", "compression.fraction=0.1"]),
    ("int8 up + int8 down", ["compression=int8", "compression.down=int8"]),
]
GOAL_GB_S = 1.0
clock = time.process_time
"""Codec timings: CPU time of this single-threaded process (others' jobs' time left out)."""
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MODELS = {
    "small": ("MLP 20-128-1 (2.8k params)", []),
    "1M": ("MLP 20-1024-1024-1 (1.07M params)", ["model.hidden_units=[1024,1024]"]),
}
CODECS = [
    Codec("fp16", min_elements=0),
    Codec("int8", min_elements=0),
    Codec("int8", per_channel=True, min_elements=0),
    Codec("int8", stochastic=True, min_elements=0),
    Codec("topk", fraction=0.1, min_elements=0),
    Codec("topk", fraction=0.01, min_elements=0),
    Codec("topk_int8", fraction=0.1, min_elements=0),
]


def make_cfg(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def run_one(overrides: list[str]) -> dict[str, Any]:
    from fedflower.experiment import run

    with tempfile.TemporaryDirectory() as out, redirect_stdout(io.StringIO()):
        results = run(make_cfg(overrides), output_dir=out)
    return results


def experiments(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    base = [
        f"num_clients={args.clients}",
        f"num_rounds={args.rounds}",
        "progress=false",
        "output.plots=false",
        "output.save_model=false",
    ]
    for model in args.models:
        label, model_overrides = MODELS[model]
        reference: dict[str, Any] | None = None
        for name, overrides in SETTINGS:
            if args.settings and name not in args.settings:
                continue
            t0 = time.perf_counter()
            res = run_one(base + model_overrides + overrides)
            totals = res["totals"]
            row = {
                "model": label,
                "clients": args.clients,
                "rounds": args.rounds,
                "setting": name,
                "mb_up": totals["bytes_up"] / 1e6,
                "mb_down": totals["bytes_down"] / 1e6,
                "accuracy": res["final"]["accuracy"],
                "seconds": time.perf_counter() - t0,
            }
            reference = reference or row
            row["ratio_up"] = reference["mb_up"] / row["mb_up"]
            row["ratio_down"] = reference["mb_down"] / row["mb_down"]
            row["accuracy_change_pp"] = 100 * (row["accuracy"] - reference["accuracy"])
            rows.append(row)
            print(
                f"{label:<36} {name:<20} up {row['mb_up']:9.3f} MB ({row['ratio_up']:5.1f}x) "
                f"down {row['mb_down']:9.3f} MB ({row['ratio_down']:4.1f}x) "
                f"acc {row['accuracy']:.4f} ({row['accuracy_change_pp']:+.2f} pp)",
                flush=True,
            )
    return rows


def codec_speed(repeats: int, sizes: list[int]) -> list[dict[str, Any]]:
    """GB/s of float32 input encoded and decoded (best and median of ``repeats``), one core."""
    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        x = rng.standard_normal((size // 1000, 1000), dtype=np.float32)
        copy = copy_speed(x, repeats)
        for codec in CODECS:
            rows.append(time_codec(codec, x, repeats, rng) | {"copy_gb_s": copy})
            print(
                "{elements:>9,} {codec:<24} encode {encode_gb_s:5.2f} GB/s (median "
                "{encode_median_gb_s:5.2f})  decode {decode_gb_s:5.2f} (median "
                "{decode_median_gb_s:5.2f})  {ratio:5.1f}x smaller  copy {copy_gb_s:5.1f} "
                "GB/s".format(**rows[-1]),
                flush=True,
            )
    missed = [
        f"{r['codec']} {direction} ({r['elements']:,})"
        for r in rows
        for direction in ("encode", "decode")
        if r[f"{direction}_gb_s"] < GOAL_GB_S
    ]
    verdict = f"missed by {', '.join(missed)}" if missed else "met by every codec, both ways"
    print(f"goal >= {GOAL_GB_S} GB/s of float32 input (best of {repeats}): {verdict}")
    return rows


def profile_codecs(repeats: int, size: int, names: list[str]) -> str:
    """Profile (cProfile) of encoding and decoding with the named codecs: where time goes."""
    import cProfile
    import pstats

    x = np.random.default_rng(0).standard_normal((size // 1000, 1000), dtype=np.float32)
    rng = np.random.default_rng(1)
    report = io.StringIO()
    for codec in CODECS:
        if codec_name(codec) not in names:
            continue
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(repeats):
            decode_parts(codec.encode(x, rng))
        profiler.disable()
        report.write(f"\n## {codec_name(codec)}: {repeats} x encode + decode of {size:,}\n")
        pstats.Stats(profiler, stream=report).strip_dirs().sort_stats("tottime").print_stats(12)
    return report.getvalue()


def copy_speed(x: np.ndarray, repeats: int) -> float:
    """GB/s of ``np.copyto`` of ``x`` into a fresh array (best of ``repeats``)."""
    best = np.inf
    for _ in range(repeats):
        t = clock()
        np.copyto(np.empty_like(x), x)
        best = min(best, clock() - t)
    return float(x.nbytes / best / 1e9)


def time_codec(
    codec: Codec, x: np.ndarray, repeats: int, rng: np.random.Generator
) -> dict[str, Any]:
    """One codec's speed on ``x``: encode and decode alternate, so both see the same load."""
    enc, dec = [], []
    for _ in range(repeats):
        t = clock()
        parts = codec.encode(x, rng)
        enc.append(clock() - t)
        t = clock()
        decode_parts(parts)
        dec.append(clock() - t)
    return {
        "codec": codec_name(codec),
        "elements": x.size,
        "encode_gb_s": x.nbytes / min(enc) / 1e9,
        "encode_median_gb_s": x.nbytes / float(np.median(enc)) / 1e9,
        "decode_gb_s": x.nbytes / min(dec) / 1e9,
        "decode_median_gb_s": x.nbytes / float(np.median(dec)) / 1e9,
        "ratio": x.nbytes / sum(p.nbytes for p in parts.values()),
    }


def codec_name(codec: Codec) -> str:
    name = codec.name + (" per-channel" if codec.per_channel else "")
    name += " stochastic" if codec.stochastic else ""
    return name + (f" {codec.fraction:.0%}" if codec.sparse else "")


def machine() -> str:
    return f"{os.cpu_count()}-core {platform.machine()}, shared with other jobs"


def speed_table(speed: list[dict[str, Any]], repeats: int) -> list[str]:
    """Markdown lines of the codec speed table."""
    threads = ", ".join(f"{v}={os.environ.get(v, 'unset')}" for v in THREAD_VARIABLES)
    lines = [
        f"Codec speed, float32 input, one core ({threads}; NumPy {np.__version__}), CPU time, "
        f"best and median of {repeats}; `np.copyto` of the same array for reference:",
        "",
        "| elements | codec | encode GB/s | median | decode GB/s | median | size ratio "
        "| copy GB/s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['elements']:,} | {r['codec']} | {r['encode_gb_s']:.2f} "
        f"| {r['encode_median_gb_s']:.2f} | {r['decode_gb_s']:.2f} "
        f"| {r['decode_median_gb_s']:.2f} | {r['ratio']:.1f}x | {r['copy_gb_s']:.1f} |"
        for r in speed
    ]
    return lines


def write_speed(speed: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """``bench/results/<speed_name>.{json,csv,md}``."""
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / args.speed_name
    record = {
        "machine": machine(),
        "numpy": np.__version__,
        "threads": {v: os.environ.get(v) for v in THREAD_VARIABLES},
        "repeats": args.repeats,
        "goal_gb_s": GOAL_GB_S,
        "load_average": os.getloadavg(),
        "codecs": speed,
    }
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    with stem.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(speed[0]))
        writer.writeheader()
        writer.writerows(speed)
    load = "/".join(f"{v:.1f}" for v in os.getloadavg())
    lines = [f"Machine: {machine()}; load average {load} (1/5/15 min) when done.", ""]
    lines += speed_table(speed, args.repeats)
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def write(
    rows: list[dict[str, Any]], speed: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    """``bench/results/<name>.{json,csv,md,png}``."""
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / args.name
    conditions = "hospitals data, FedAvg, 1 local epoch, seed 0"
    stem.with_suffix(".json").write_text(
        json.dumps(
            {"machine": machine(), "conditions": conditions, "runs": rows, "codecs": speed},
            indent=1,
        )
        + "\n"
    )
    if rows:
        with stem.with_suffix(".csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    lines = [f"Machine: {machine()}. Runs: {conditions}.", ""]
    if rows:
        lines += [
            "| model | clients x rounds | setting | MB up | up ratio | MB down | accuracy "
            "| change |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['model']} | {r['clients']} x {r['rounds']} | {r['setting']} "
            f"| {r['mb_up']:.3f} | {r['ratio_up']:.1f}x | "
            f"{r['mb_down']:.3f} | {r['accuracy']:.4f} | {r['accuracy_change_pp']:+.2f} pp |"
            for r in rows
        ]
    if speed:
        lines += ["", *speed_table(speed, args.repeats)]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    if rows:
        plot(rows, stem.with_suffix(".png"))


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for r in (r for r in rows if r["model"] == model):
            ax.scatter(r["mb_up"], r["accuracy"])
            ax.annotate(r["setting"], (r["mb_up"], r["accuracy"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("MB sent up (clients -> server), whole run")
        ax.set_ylabel("final test accuracy")
        ax.set_title(model)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=30, help="codec timing: best of")
    parser.add_argument("--no-runs", action="store_true", help="only time the codecs")
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[10**6, 10**7], help="codec timing: elements"
    )
    parser.add_argument("--speed-name", default="codec_speed", help="codec speed file name")
    parser.add_argument(
        "--profile",
        nargs="*",
        default=None,
        help="only profile these codecs ('topk 10%%', ...) on 1e6 elements (-> *_profile.txt)",
    )
    parser.add_argument("--name", default="compression", help="results file name")
    parser.add_argument("--settings", nargs="*", default=None, help="only these settings")
    parser.add_argument(
        "--merge", nargs="*", default=None, help="only combine these results' json files"
    )
    args = parser.parse_args()
    if args.merge is not None:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        rows = [row for part in parts for row in part["runs"]]
        write(rows, next((p["codecs"] for p in parts if p["codecs"]), []), args)
        return
    if args.profile:
        text = profile_codecs(args.repeats, 10**6, args.profile)
        print(text)
        (RESULTS / f"{args.speed_name}_profile.txt").write_text(text)
        return
    speed = codec_speed(args.repeats, args.sizes)
    write_speed(speed, args)
    if not args.no_runs:
        write(experiments(args), speed, args)


if __name__ == "__main__":
    main()
