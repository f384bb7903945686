"""Synchronous FedAvg vs asynchronous FedBuff and FedAsync under heavy-tailed client latency.

100 clients whose speeds are drawn once from a log-normal distribution (sigma = 1: one client
in ten is at least 3.6x slower than the median one). Every strategy gets the same total client
work (accepted client updates), and time is the virtual clock of the latency model
(``fedflower.engine.clock.VirtualClockGrid``), so the numbers depend only on the config and the
seed, not on this machine:

* FedAvg (McMahan et al. 2017, arXiv:1602.05629): 20 clients per round, ``R`` rounds; a round
  lasts as long as its slowest client. Client-side evaluation is off for every strategy, so only
  training is timed.
* FedBuff (Nguyen et al. 2022, arXiv:2106.06639): 20 clients in flight, K = 10 updates per server
  step, ``2 R`` server steps.
* FedAsync (Xie et al. 2019, arXiv:1903.03934): 20 clients in flight, one server step per
  update, ``20 R`` server steps.

Two data sets: the default hospitals data (one hospital per client, case mix 0.5 and feature
shift 0.3) and a strongly non-IID version (case mix 1.5, feature shift 1.0: one hospital in ten
has a prevalence of at most 2%, one in ten at least 85%, and lab calibrations differ widely).
(A label-skewed ``partition=dirichlet`` split with alpha 0.3 cannot be drawn for 100 clients of
this pool: flwr-datasets' sampler gives up.) For each, the virtual time until the global
model's central test accuracy first reaches each target (accuracy levels that all three
strategies reach within the budget), the speed-up over FedAvg, and a plot of accuracy vs
virtual time (``bench/results/async_vs_sync.png``; ``bench/results`` is git-ignored).

Usage::

    python bench/async_vs_sync.py                     # the full benchmark (about 8 min, 2 cores)
    python bench/async_vs_sync.py --seeds 0 1 2       # three seeds, mean speed-ups
    python bench/async_vs_sync.py --rounds 10 --clients 20 --concurrency 10 --buffer 5  # smoke
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
from hydra import compose, initialize_config_module

RESULTS = Path(__file__).resolve().parent / "results"

SCENARIOS: dict[str, tuple[list[str], tuple[float, ...]]] = {
    # name: (overrides, target accuracies: levels every strategy reaches within the budget)
    "hospitals": ([], (0.85, 0.88)),
    "strong case mix": (["dataset.case_mix=1.5", "dataset.feature_shift=1.0"], (0.78, 0.80)),
}


def strategies(args: argparse.Namespace) -> dict[str, list[str]]:
    """Overrides of each strategy; all get ``args.rounds * per_round`` accepted updates."""
    per_round = args.per_round
    return {
        "FedAvg": [
            "strategy=fedavg",
            f"strategy.fraction_train={per_round / args.clients}",
            "strategy.fraction_evaluate=0.0",
            f"num_rounds={args.rounds}",
        ],
        "FedBuff": [
            "strategy=fedbuff",
            f"strategy.concurrency={args.concurrency}",
            f"strategy.buffer_size={args.buffer}",
            f"strategy.server_lr={args.server_lr}",
            f"num_rounds={args.rounds * per_round // args.buffer}",
        ],
        "FedAsync": [
            "strategy=fedasync",
            f"strategy.concurrency={args.concurrency}",
            f"strategy.alpha={args.alpha}",
            f"strategy.evaluate_every={args.fedasync_eval_every}",
            f"num_rounds={args.rounds * per_round}",
        ],
    }


def compose_cfg(overrides: list[str]) -> Any:
    with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def time_to(rows: list[dict[str, Any]], target: float) -> float | None:
    """Virtual time of the first evaluation at or above ``target`` accuracy."""
    for row in rows:
        if row["accuracy"] >= target:
            return float(row["virtual_time"])
    return None


def run_one(name: str, overrides: list[str], out: Path) -> dict[str, Any]:
    from fedflower.backend import quiet_tensorflow_import

    quiet_tensorflow_import()  # here, not at import: --help answers without TensorFlow
    from fedflower.experiment import run

    cfg = compose_cfg(overrides)
    t0 = time.perf_counter()
    with redirect_stdout(io.StringIO()):
        results = run(cfg, out)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    initial = {"virtual_time": 0.0, "accuracy": results["initial"]["accuracy"]}
    print(
        f"  {name:<9} final acc {results['final']['accuracy']:.4f}  virtual "
        f"{results['virtual_time']:8.1f} s  wall {wall:6.1f} s",
        flush=True,
    )
    return {"rows": [initial, *rows], "results": results, "wall": wall}


def fmt(t: float | None) -> str:
    return "not reached" if t is None else f"{t:.1f} s"


def plot(runs: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.2), squeeze=False)
    for ax, (scenario, by_strategy) in zip(axes[0], runs.items(), strict=True):
        for name, r in by_strategy.items():
            xs = [row["virtual_time"] for row in r["rows"]]
            ys = [row["accuracy"] for row in r["rows"]]
            ax.plot(xs, ys, label=name, linewidth=1.2)
        for target in SCENARIOS[scenario][1]:
            ax.axhline(target, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(scenario)
        ax.set_xlabel("virtual time (s)")
        ax.set_ylabel("central test accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("accuracy vs virtual time, 100 clients, log-normal(sigma=1) client speeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--patients", type=int, default=200, help="patients per hospital")
    parser.add_argument("--rounds", type=int, default=40, help="FedAvg rounds (sets the work)")
    parser.add_argument("--per-round", type=int, default=20, help="FedAvg clients per round")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--buffer", type=int, default=10, help="FedBuff's K")
    parser.add_argument("--server-lr", type=float, default=1.0, help="FedBuff's server lr")
    parser.add_argument("--alpha", type=float, default=0.6, help="FedAsync's alpha")
    parser.add_argument("--fedasync-eval-every", type=int, default=5)
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal sigma")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    common = [
        f"num_clients={args.clients}",
        f"dataset.patients_per_hospital={args.patients}",
        "dataset.test_patients_per_hospital=50",
        "latency=lognormal",
        f"latency.slowdown.sigma={args.sigma}",
        "progress=false",
        "output.save_model=false",
        "output.plots=false",
    ]
    # runs[seed][scenario][strategy]
    runs: dict[int, dict[str, dict[str, dict[str, Any]]]] = {}
    t0 = time.perf_counter()
    for seed in args.seeds:
        runs[seed] = {}
        for scenario in args.scenarios:
            print(f"seed {seed}, {scenario}", flush=True)
            runs[seed][scenario] = {}
            for name, overrides in strategies(args).items():
                slug = f"seed{seed}-{scenario.split()[0].lower()}-{name.lower()}"
                runs[seed][scenario][name] = run_one(
                    name,
                    [*common, f"seed={seed}", *SCENARIOS[scenario][0], *overrides],
                    args.out / slug,
                )

    print()
    header = (
        f"{'data':<16} {'seed':>4} {'strategy':<9} {'updates':>7} {'final acc':>9} "
        f"{'virtual time':>12}  time to target accuracy (speed-up vs FedAvg)"
    )
    print(header)
    print("-" * (len(header) + 12))
    summary: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": []}
    speedups: dict[tuple[str, str, float], list[float]] = {}
    for seed, by_scenario in runs.items():
        for scenario, by_strategy in by_scenario.items():
            targets = SCENARIOS[scenario][1]
            base = {t: time_to(by_strategy["FedAvg"]["rows"], t) for t in targets}
            for name, r in by_strategy.items():
                res = r["results"]
                updates = res.get("async", {}).get(
                    "folded", res["totals"]["rounds"] * args.per_round
                )
                cells, row = [], {}
                for target in targets:
                    t = time_to(r["rows"], target)
                    speedup = None if (t is None or base[target] is None) else base[target] / t
                    if speedup is not None:
                        speedups.setdefault((scenario, name, target), []).append(speedup)
                    cells.append(
                        f"{target:.2f}: {fmt(t)}"
                        + ("" if speedup is None else f" ({speedup:.2f}x)")
                    )
                    row[str(target)] = {"time": t, "speedup_vs_fedavg": speedup}
                print(
                    f"{scenario:<16} {seed:>4} {name:<9} {updates:>7} "
                    f"{res['final']['accuracy']:>9.4f} {res['virtual_time']:>10.1f} s  "
                    + "   ".join(cells)
                )
                summary["rows"].append(
                    {
                        "data": scenario,
                        "seed": seed,
                        "strategy": name,
                        "client_updates": updates,
                        "final_accuracy": res["final"]["accuracy"],
                        "total_virtual_time": res["virtual_time"],
                        "time_to_target": row,
                        "wall_seconds": r["wall"],
                    }
                )
    if len(args.seeds) > 1:
        print("\nspeed-up over FedAvg in time to target, geometric mean over seeds (min-max):")
        for (scenario, name, target), values in speedups.items():
            if name != "FedAvg":
                gmean = float(np.exp(np.mean(np.log(values))))
                print(
                    f"  {scenario:<16} {name:<9} {target:.2f}: {gmean:.2f}x "
                    f"({min(values):.2f}-{max(values):.2f}, {len(values)} seeds)"
                )
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "async_vs_sync.png"
    plot(runs[args.seeds[0]], png)
    (args.out / "async_vs_sync.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\nplot (seed {args.seeds[0]}): {png}\nsummary: {args.out / 'async_vs_sync.json'}")
    print(f"benchmark wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
