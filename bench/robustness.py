"""Final accuracy of each aggregator under each simulated attack and share of malicious clients.

The table robust-aggregation papers show (setup after Flower's FLANDERS baseline: FedAvg vs
Krum, Bulyan, trimmed mean and median under Gaussian and LIE attacks): aggregators fedavg,
fedmedian, fedtrimmedavg, krum, multikrum, bulyan x attacks none, sign_flip, gaussian, lie x
malicious fractions 0.1, 0.2, 0.4, on 20 clients with a non-IID split (one synthetic hospital
per client, strong case mix and lab-calibration shift: prevalence and feature scales differ
from client to client), logistic regression, every client in every round, the local engine.

Each robust aggregator is told the number of malicious clients ``f = round(fraction * n)``
(``num_malicious_nodes``; Multi-Krum averages ``n - f``; the trimmed mean cuts ``beta =
fraction``, at most 0.45). Bulyan's guarantee needs ``n >= 4f + 3``: with 20 clients it is
given ``f = min(f, 4)``, and the table marks those cells. Without an attack (``none``) the
fraction only sets the aggregators' ``f``; FedAvg and the median take no ``f``, so their
``none`` cells are one run each, reused for every fraction. Writes
``bench/results/robustness.{csv,json,md}`` and the heatmap ``robustness.png``.

Cost, measured on this 2-core machine at load average ~4: a run is about 1.2 s of set-up and
evaluation plus 1.1 s per round (20 Keras ``fit`` calls of ~55 ms, mostly Keras and tf.data
per-call overhead, not arithmetic), 5.7 s for 4 rounds; the 67 distinct runs of the default
table, one after another in this process (one TensorFlow thread), take about 7 minutes. Two
worker processes were slower here (each pays its own TensorFlow start and first traces, and
the cores are shared), so there are none.

Usage::

    nice python bench/robustness.py                      # the full table (about 5-10 min)
    nice python bench/robustness.py --rounds 2 --fractions 0.2 --attacks none lie  # smoke
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
os.environ.setdefault("TQDM_DISABLE", "1")

RESULTS = Path(__file__).resolve().parent / "results"
AGGREGATORS = ("fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")
ATTACKS = ("none", "sign_flip", "gaussian", "lie")
FRACTIONS = (0.2, 0.4, 0.1)  # run in this order; the table sorts them


def parse() -> argparse.Namespace:
    """The command line, parsed before TensorFlow is imported: ``--help`` is instant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS))
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


ARGS = parse() if __name__ == "__main__" else None

from fedflower.backend import quiet_tensorflow_import

quiet_tensorflow_import()

import numpy as np
from hydra import compose, initialize_config_module

from fedflower.experiment import run


def aggregator_overrides(name: str, fraction: float, clients: int) -> tuple[list[str], str]:
    """The strategy's overrides for ``fraction`` malicious clients, and a note if limited."""
    f = round(fraction * clients)
    if name in ("fedavg", "fedmedian"):
        return [f"strategy={name}"], ""
    if name == "fedtrimmedavg":
        return [f"strategy={name}", f"strategy.beta={min(fraction, 0.45)}"], ""
    if name == "bulyan":
        limit = (clients - 3) // 4
        note = f"f={limit}<{f}" if f > limit else ""
        return [f"strategy={name}", f"strategy.num_malicious_nodes={min(f, limit)}"], note
    extra = [f"strategy.num_nodes_to_select={clients - f}"] if name == "multikrum" else []
    return [f"strategy={name}", f"strategy.num_malicious_nodes={f}", *extra], ""


def base_overrides(args: argparse.Namespace) -> list[str]:
    return [
        f"num_clients={args.clients}",
        f"num_rounds={args.rounds}",
        f"seed={args.seed}",
        "model=logreg",
        "dataset.patients_per_hospital=200",
        "dataset.test_patients_per_hospital=100",
        "dataset.case_mix=1.5",
        "dataset.feature_shift=1.0",
        "strategy.fraction_evaluate=0.0",
        "client.steps_per_execution=8",
        "client.learning_rate=0.05",
        "simulation.tf_threads=1",
        "progress=false",
        "output.plots=false",
        "output.save_model=false",
    ]


def run_cell(overrides: list[str], out: Path) -> dict[str, Any]:
    with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with redirect_stdout(io.StringIO()):
        results = run(cfg, out)
    return results


def measure(overrides: list[str]) -> dict[str, Any]:
    """One run's final accuracy and loss, attack totals and seconds."""
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = run_cell(overrides, Path(tmp) / "run")
    totals = results.get("attack", {})
    return {
        "accuracy": results["final"]["accuracy"],
        "loss": results["final"]["loss"],
        "malicious_updates": totals.get("malicious_updates", 0),
        "malicious_excluded": totals.get("malicious_excluded", 0),
        "seconds": time.perf_counter() - t,
    }


Cell = tuple[str, str, float, tuple[str, ...], str]


def cells(args: argparse.Namespace) -> list[Cell]:
    """(aggregator, attack, fraction, overrides, note) of every table cell, in run order."""
    out = []
    for fraction in args.fractions:
        for attack in args.attacks:
            for name in args.aggregators:
                strategy, note = aggregator_overrides(name, fraction, args.clients)
                overrides = [*base_overrides(args), *strategy, f"attack={attack}"]
                if attack != "none":
                    overrides.append(f"attack.fraction={fraction}")
                out.append((name, attack, fraction, tuple(overrides), note))
    return out


def heatmap(rows: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [(a, f) for a in args.attacks for f in sorted(args.fractions)]
    acc = {(r["aggregator"], r["attack"], r["fraction"]): r["accuracy"] for r in rows}
    grid = np.array([[acc.get((g, a, f), np.nan) for a, f in cols] for g in args.aggregators])
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(cols), 0.9 + 0.5 * len(args.aggregators)))
    image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(cols)), [f"{a}\n{f:g}" for a, f in cols], fontsize=7)
    ax.set_yticks(range(len(args.aggregators)), args.aggregators)
    ax.set_title(f"final test accuracy, {args.clients} non-IID clients, {args.rounds} rounds")
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> str:
    cols = [(a, f) for a in args.attacks for f in sorted(args.fractions)]
    cell = {(r["aggregator"], r["attack"], r["fraction"]): r for r in rows}
    head = "| aggregator | " + " | ".join(f"{a} {f:g}" for a, f in cols) + " |"
    lines = [head, "|" + " --- |" * (len(cols) + 1)]
    for g in args.aggregators:
        values = []
        for a, f in cols:
            r = cell.get((g, a, f))
            if r is None:
                values.append("-")
                continue
            values.append(f"{r['accuracy']:.3f}" + ("*" if r["note"] else ""))
        lines.append(f"| {g} | " + " | ".join(values) + " |")
    lines.append("")
    lines.append(
        f"Final central test accuracy after {args.rounds} rounds, {args.clients} clients, "
        f"seed {args.seed}; * Bulyan limited to f = {(args.clients - 3) // 4} (needs n >= 4f+3); "
        "- not measured. "
        f"{len(rows)} cells ({runs_of(cells(args))} runs) in "
        f"{seconds / 60:.1f} min on {platform.machine()} "
        f"({os.cpu_count()} cores, shared with other jobs)."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = ARGS or parse()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    table = cells(args)
    measured: dict[tuple[str, ...], dict[str, Any]] = {}  # equal override lists run once
    for name, attack, fraction, overrides, note in table:
        if overrides not in measured:
            measured[overrides] = measure(list(overrides))
        result = measured[overrides]
        row = {"aggregator": name, "attack": attack, "fraction": fraction, **result, "note": note}
        rows.append(row)
        write(rows, args, time.perf_counter() - t0)
        print(
            f"{name:<14} {attack:<10} {fraction:<4} acc {row['accuracy']:.4f} "
            f"excluded {row['malicious_excluded']}/{row['malicious_updates']} "
            f"{row['seconds']:.1f}s {note}",
            flush=True,
        )
    seconds = time.perf_counter() - t0
    print(f"\n{len(rows)} cells, {runs_of(table)} runs in {seconds:.0f} s; results in {args.out}")


def runs_of(table: list[Cell]) -> int:
    """Distinct runs behind the table's cells."""
    return len({cell[3] for cell in table})


def write(rows: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> None:
    """Write the rows so far (a cut-short run keeps what it measured; the table marks gaps)."""
    with (args.out / "robustness.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    # the output folder is where the files are, not part of the result (no machine paths)
    settings = {k: str(v) for k, v in vars(args).items() if k != "out"}
    meta = {"args": settings, "seconds": seconds}
    (args.out / "robustness.json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    (args.out / "robustness.md").write_text(markdown(rows, args, seconds))
    heatmap(rows, args, args.out / "robustness.png")


if __name__ == "__main__":
    main()
