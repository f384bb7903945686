"""``fedflower-compare <multirun dir>``: the runs of a Hydra sweep side by side.

Every run directory under the given one (found by its ``results.json``) joins the group of its
overrides (read from Hydra's ``.hydra/overrides.yaml``) without ``seed=...`` and without those
all runs share, so the seeds of one configuration are pooled. For each configuration the tool
prints the final test accuracy and loss as mean ± standard deviation over seeds, the rounds and
seconds until the test accuracy first reaches a target, and the bytes sent, then writes
``comparison.csv`` and ``comparison.png`` (test accuracy per round, one line per configuration:
the mean over seeds with a band from the lowest to the highest seed).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedflower.checks import check_number
from fedflower.errors import DataError, FedflowerError
from fedflower.outputs.rundir import METRICS_FILE, RESULTS_FILE, RunDir, find_runs
from fedflower.startup import EXIT_USAGE

POOLED = ("seed",)
"""Override keys whose values are pooled (not part of a configuration's name)."""


@dataclass
class Run:
    """One run of a sweep: its configuration label, seed and per-round metrics."""

    path: Path
    label: str
    rows: list[dict[str, Any]]
    results: dict[str, Any]


@dataclass
class Group:
    """The runs of one configuration (all its seeds)."""

    label: str
    runs: list[Run] = field(default_factory=list)


def _overrides(run: RunDir, root: Path) -> list[str]:
    recorded = run.overrides()
    if recorded is not None:
        return recorded
    rel = run.path.relative_to(root)  # no Hydra record: the directory names are the overrides
    return [p for part in rel.parts for p in part.split(",")]


def label_of(overrides: Sequence[str], common: Collection[str] = ()) -> str:
    """A configuration's name: its overrides except pooled and ``common`` ones (``base`` if none).

    ``common`` holds the overrides every run of the sweep shares (``experiment=quick``): they
    tell no configuration from another.
    """
    kept = sorted(
        o for o in overrides if o not in common and o.lstrip("+~").split("=")[0] not in POOLED
    )
    return ",".join(kept) or "base"


def _read_run(run: RunDir) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    results = run.results()
    if not run.metrics_path.is_file():
        raise DataError(f"cannot read the run in {run.path}: no {METRICS_FILE}")
    return run.metrics(), results


def load_groups(root: Path | str) -> list[Group]:
    """Every finished run under ``root``, grouped by configuration (in order of their labels)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory; give the multirun directory of a sweep")
    found = find_runs(root)
    overrides = {d.path: _overrides(d, root) for d in found}
    common = set.intersection(*(set(o) for o in overrides.values())) if found else set()
    groups: dict[str, Group] = {}
    for run_dir in found:
        label = label_of(overrides[run_dir.path], common)
        run = Run(run_dir.path, label, *_read_run(run_dir))
        groups.setdefault(run.label, Group(run.label)).runs.append(run)
    if not groups:
        raise DataError(f"no finished run (no {RESULTS_FILE}) under {root}")
    return [groups[k] for k in sorted(groups)]


def reach(rows: list[dict[str, Any]], target: float) -> tuple[int, float] | None:
    """The first round whose test accuracy is >= ``target``, and the seconds elapsed until then.

    Seconds are the virtual time when the run had a latency model, else the wall time.
    """
    for row in rows:
        if row.get("accuracy") is not None and row["accuracy"] >= target:
            seconds = row.get("virtual_time")
            return int(row["round"]), float(seconds if seconds is not None else row["elapsed"])
    return None


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarize(group: Group, target: float) -> dict[str, Any]:
    """One row of the comparison: a configuration's statistics over its seeds."""
    finals = [r.rows[-1] for r in group.runs if r.rows]
    acc, acc_sd = _mean_std([f["accuracy"] for f in finals])
    loss, loss_sd = _mean_std([f["loss"] for f in finals])
    reached = [x for x in (reach(r.rows, target) for r in group.runs) if x is not None]
    rounds, _ = _mean_std([float(x[0]) for x in reached])
    seconds, _ = _mean_std([x[1] for x in reached])
    sent = [sum(row["bytes_down"] + row["bytes_up"] for row in r.rows) for r in group.runs]
    return {
        "config": group.label,
        "seeds": len(group.runs),
        "final_accuracy_mean": acc,
        "final_accuracy_std": acc_sd,
        "final_loss_mean": loss,
        "final_loss_std": loss_sd,
        "target_accuracy": target,
        "reached": len(reached),
        "rounds_to_target": rounds,
        "seconds_to_target": seconds,
        "bytes_mean": float(np.mean(sent)),
    }


def default_target(groups: list[Group]) -> float:
    """The lowest mean final accuracy of any configuration: some seed of each one reaches it."""
    means = []
    for group in groups:
        finals = [r.rows[-1]["accuracy"] for r in group.runs if r.rows]
        if finals:
            means.append(float(np.mean(finals)))
    return round(min(means), 4) if means else 0.0


def write_csv(table: list[dict[str, Any]], path: Path) -> None:
    """The comparison table as CSV, one row per configuration."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


def plot(groups: list[Group], path: Path) -> None:
    """Test accuracy per round: the mean over seeds per configuration, a band min..max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 5))
    for group in groups:
        length = min(len(r.rows) for r in group.runs)
        if length == 0:
            continue
        rounds = [row["round"] for row in group.runs[0].rows[:length]]
        acc = np.array([[row["accuracy"] for row in r.rows[:length]] for r in group.runs])
        (line,) = ax.plot(rounds, acc.mean(axis=0), label=f"{group.label} ({len(acc)} seeds)")
        ax.fill_between(rounds, acc.min(axis=0), acc.max(axis=0), color=line.get_color(), alpha=0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _print(table: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from fedflower.outputs.console import human_bytes

    target = table[0]["target_accuracy"]
    out = Table(title=f"fedflower comparison (target test accuracy {target:.4f})")
    out.add_column("config", no_wrap=True)
    for name in ("seeds", "final accuracy", "final loss", "rounds to target"):
        out.add_column(name)
    out.add_column("seconds to target")
    out.add_column("bytes / run")
    for row in table:
        reached = f"{row['reached']}/{row['seeds']}"
        out.add_row(
            row["config"],
            str(row["seeds"]),
            f"{row['final_accuracy_mean']:.4f} ± {row['final_accuracy_std']:.4f}",
            f"{row['final_loss_mean']:.4f} ± {row['final_loss_std']:.4f}",
            f"{row['rounds_to_target']:.1f} ({reached})",
            f"{row['seconds_to_target']:.1f}",
            human_bytes(row["bytes_mean"]),
        )
    # off a terminal rich assumes 80 columns and would wrap the table: let it take its width
    Console(highlight=False, width=None if sys.stdout.isatty() else 250).print(out)


def compare(
    root: Path | str, target: float | None = None, out: Path | str | None = None
) -> list[dict[str, Any]]:
    """Group the runs under ``root``, print the table, write the CSV and plot; return the table."""
    groups = load_groups(root)
    if target is None:
        target = default_target(groups)
    table = [summarize(g, target) for g in groups]
    out = Path(root if out is None else out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "comparison.csv")
    plot(groups, out / "comparison.png")
    _print(table)
    print(f"wrote {out / 'comparison.csv'} and {out / 'comparison.png'}")
    return table


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``fedflower-compare`` console script."""
    parser = argparse.ArgumentParser(prog="fedflower-compare", description=__doc__.split("\n")[0])
    parser.add_argument("multirun_dir", type=Path, help="a sweep's directory (fedflower -m ...)")
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        help="test accuracy to reach (default: the lowest mean final accuracy of any config)",
    )
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the dir)")
    args = parser.parse_args(argv)
    try:
        if args.target is not None:
            check_number("--target", args.target, minimum=0.0, maximum=1.0)
        compare(args.multirun_dir, args.target, args.out)
    except FedflowerError as exc:
        print(f"fedflower-compare: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
