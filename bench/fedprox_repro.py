"""FedProx's Figure 1 on Synthetic(1, 1): FedAvg vs FedProx under 0 %, 50 % and 90 % stragglers.

Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020, arXiv:1812.06127,
Figure 1 (Synthetic(1, 1) column). Every run is ``fedflower experiment=fedprox_synthetic`` (30
devices, multinomial logistic regression, SGD lr 0.01, batch 10, E = 20, 10 devices per round)
with ``strategy=fedavg`` or ``strategy=fedprox strategy.proximal_mu=<mu>`` and
``client.straggler_fraction`` in {0, 0.5, 0.9}. As in the paper, FedAvg drops the stragglers
and FedProx keeps their partial work (1..E epochs); both see the same stragglers (same seed).

Per round it records the training loss of the global model (example-weighted over all 30
devices' training data: the experiment's federated evaluation runs on the training splits) and
its test accuracy (the devices' pooled 10 % test splits). It writes ``fedprox_repro.png``
(top: training loss, bottom: test accuracy; one column per straggler level, like Figure 1) and
``fedprox_repro.json``, and prints a table of the final values.

    python bench/fedprox_repro.py                  # 20 rounds (the paper runs 200), ~5 minutes
    python bench/fedprox_repro.py --rounds 200     # the paper's length
    python bench/fedprox_repro.py --with-mu0       # also FedProx with mu = 0 (the paper's 3rd line)

The runs are spread over ``--workers`` processes (default 2, one TensorFlow thread each).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TQDM_DISABLE", "1")

STRAGGLERS = (0.0, 0.5, 0.9)


def overrides(strategy: str, mu: float, stragglers: float, rounds: int, seed: int) -> list[str]:
    """The fedflower command line of one run."""
    args = [
        "experiment=fedprox_synthetic",
        f"strategy={'fedprox' if strategy.startswith('fedprox') else 'fedavg'}",
        f"client.straggler_fraction={stragglers}",
        f"num_rounds={rounds}",
        f"seed={seed}",
        "simulation.tf_threads=1",
        "progress=false",
        "output.plots=false",
        "output.save_model=false",
    ]
    if strategy.startswith("fedprox"):
        args.append(f"strategy.proximal_mu={mu}")
    return args


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this (worker) process; return its per-round curves."""
    import contextlib
    import io

    from fedflower.backend import quiet_tensorflow_import

    quiet_tensorflow_import()
    from hydra import compose, initialize_config_module

    from fedflower.experiment import run

    with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=job["overrides"])
    out = Path(job["out"])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        results = run(cfg, out)
    seconds = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        **{k: job[k] for k in ("label", "strategy", "mu", "stragglers")},
        "overrides": job["overrides"],
        "initial_test_accuracy": results["initial"]["accuracy"],
        "train_loss": [r["fed_loss"] for r in rows],
        "test_accuracy": [r["accuracy"] for r in rows],
        "seconds": seconds,
    }


def plot(runs: list[dict[str, Any]], stragglers: tuple[float, ...], path: Path) -> None:
    """Figure-1 layout: columns = straggler levels; rows = training loss, test accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(stragglers), figsize=(4 * len(stragglers), 6.5), sharex=True)
    styles = {"fedavg": "-", "fedprox0": ":", "fedprox": "--"}
    for col, s in enumerate(stragglers):
        for run in (r for r in runs if r["stragglers"] == s):
            x = range(1, len(run["train_loss"]) + 1)
            style = styles[run["strategy"]]
            axes[0, col].plot(x, run["train_loss"], style, label=run["label"])
            axes[1, col].plot(x, run["test_accuracy"], style, label=run["label"])
        axes[0, col].set_title(f"Synthetic(1,1), {int(100 * s)}% stragglers")
        axes[1, col].set_xlabel("# rounds")
    axes[0, 0].set_ylabel("training loss")
    axes[1, 0].set_ylabel("test accuracy")
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(runs: list[dict[str, Any]]) -> str:
    """Final training loss / test accuracy, and how much the training loss jumps around."""
    lines = [
        f"{'strategy':<16} {'stragglers':>10} {'final loss':>10} {'final acc':>9} "
        f"{'best acc':>8} {'max loss':>9} {'loss ups':>8} {'seconds':>8}",
    ]
    for run in runs:
        loss, acc = run["train_loss"], run["test_accuracy"]
        ups = sum(b > a for a, b in itertools.pairwise(loss))
        lines.append(
            f"{run['label']:<16} {int(100 * run['stragglers']):>9}% {loss[-1]:>10.4f} "
            f"{acc[-1]:>9.4f} {max(acc):>8.4f} {max(loss):>9.4f} {ups:>8d} {run['seconds']:>8.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds per run (paper: 200)")
    parser.add_argument("--mu", type=float, default=1.0, help="FedProx's mu (paper: 1)")
    parser.add_argument("--with-mu0", action="store_true", help="also run FedProx with mu = 0")
    parser.add_argument(
        "--stragglers", type=float, nargs="+", default=list(STRAGGLERS), help="fractions"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="parallel runs")
    parser.add_argument("--out", type=Path, default=Path("outputs/fedprox_repro"))
    args = parser.parse_args()

    strategies = [("fedavg", "FedAvg", 0.0), ("fedprox", f"FedProx (mu={args.mu:g})", args.mu)]
    if args.with_mu0:
        strategies.insert(1, ("fedprox0", "FedProx (mu=0)", 0.0))
    stragglers = tuple(args.stragglers)
    jobs = [
        {
            "label": label,
            "strategy": key,
            "mu": mu,
            "stragglers": s,
            "overrides": overrides(key, mu, s, args.rounds, args.seed),
            "out": str(args.out / f"{key}-stragglers{int(100 * s)}"),
        }
        for s in stragglers
        for key, label, mu in strategies
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{len(jobs)} runs x {args.rounds} rounds on {args.workers} worker(s) -> {args.out}")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(run_one, jobs))
    wall = time.perf_counter() - t0
    plot(runs, stragglers, args.out / "fedprox_repro.png")
    (args.out / "fedprox_repro.json").write_text(json.dumps(runs, indent=1) + "\n")
    print(table(runs))
    print(
        "\nfinal = after the last round; best acc = best test accuracy of any round; max loss / "
        "loss ups = largest training loss and number of rounds it went up (instability)"
    )
    print(f"wall time {wall:.0f} s; plot {args.out / 'fedprox_repro.png'}")


if __name__ == "__main__":
    main()
