"""Sweep of the strategies' default hyper-parameters on the bundled tasks (FedProx mu, server eta).

The issue this answers: ``-m strategy=fedavg,fedprox,fedadam num_rounds=2`` compared FedAvg
with FedProx at mu = 1.0 and FedAdam at eta = 0.01, values tuned for nothing in particular.
Each candidate value runs, in this one process and with the same seed and data, on:

* ``hospitals``: the default experiment (10 hospitals, 1000 patients each), 2 and 10 rounds;
* ``breast_cancer``: 5 IID clients of the Wisconsin data, 5 rounds;
* ``fedprox_synthetic``: the FedProx paper's Synthetic(1, 1) (30 devices, 10 classes), 10 rounds
  (only when asked for: ``--tasks "fedprox_synthetic, 10 rounds"``).

Grids follow the papers' own: FedProx (Li et al. 2020, arXiv:1812.06127) tries mu in
{0.001, 0.01, 0.1, 1}; Reddi et al. 2021 (arXiv:2003.00295) search the server learning rate
on a log10 grid and use tau = 1e-3. Final central test accuracy per task and value is written
to ``bench/results/defaults_sweep.{csv,json,md}``.

Results are written after every run; rows already in ``defaults_sweep.json`` are kept and not
run again (delete the file for a fresh sweep).

Usage::

    python bench/defaults_sweep.py                 # the whole sweep (about 10 min, 2 cores)
    python bench/defaults_sweep.py --tasks "hospitals, 10 rounds" --values fedadam=0.01,0.1
    python bench/defaults_sweep.py --tasks breast_cancer --strategies fedprox   # a part
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

TASKS: dict[str, list[str]] = {
    "hospitals, 2 rounds": ["num_rounds=2"],
    "breast_cancer, 5 rounds": ["dataset=breast_cancer", "num_clients=5", "num_rounds=5"],
    "hospitals, 10 rounds": ["num_rounds=10"],
    "fedprox_synthetic, 10 rounds": ["experiment=fedprox_synthetic", "num_rounds=10"],
}
GRIDS: dict[str, tuple[str, list[float]]] = {
    "fedavg": ("", [0.0]),
    "fedprox": ("proximal_mu", [0.001, 0.01, 0.1, 1.0]),
    "fedadam": ("eta", [0.01, 0.03, 0.1, 0.3]),
    "fedyogi": ("eta", [0.01, 0.03, 0.1, 0.3]),
    "fedadagrad": ("eta", [0.01, 0.03, 0.1, 0.3]),
    "fedavgm": ("server_momentum", [0.0, 0.9]),
}


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line (parsed before TensorFlow is imported, so --help is instant)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS)[:3], choices=TASKS)
    parser.add_argument("--strategies", nargs="+", default=list(GRIDS), choices=GRIDS)
    parser.add_argument(
        "--values",
        nargs="+",
        default=[],
        metavar="STRATEGY=V1,V2",
        help="run only these values of a strategy's option (e.g. fedadam=0.01,0.1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def load_rows(out: Path) -> list[dict[str, object]]:
    """The rows of an earlier sweep's ``defaults_sweep.json`` (kept, not run again)."""
    import json

    path = out / "defaults_sweep.json"
    return list(json.loads(path.read_text())) if path.is_file() else []


def sweep(args: argparse.Namespace) -> list[dict[str, object]]:
    """Run every (task, strategy, value) not measured yet; write the results after each run."""
    import contextlib
    import io
    import tempfile

    from fedflower.backend import quiet_tensorflow_import
    from fedflower.startup import set_environment_defaults

    set_environment_defaults()
    quiet_tensorflow_import()
    from hydra import compose, initialize_config_module

    from fedflower.experiment import run

    rows = load_rows(args.out)
    done = {(r["task"], r["strategy"], r["value"]) for r in rows}
    only = {k: [float(v) for v in vs.split(",")] for k, vs in (a.split("=") for a in args.values)}
    quiet = ["progress=false", "output.plots=false", "output.save_model=false"]
    with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
        for task, task_overrides in ((t, TASKS[t]) for t in args.tasks):
            for strategy in args.strategies:
                key, values = GRIDS[strategy]
                for value in only.get(strategy, values):
                    if (task, strategy, value) in done:
                        continue
                    option = [f"strategy.{key}={value}"] if key else []
                    overrides = [*task_overrides, f"strategy={strategy}", *option, *quiet]
                    cfg = compose("config", overrides=[*overrides, f"seed={args.seed}"])
                    with (
                        tempfile.TemporaryDirectory() as out,
                        contextlib.redirect_stdout(io.StringIO()),
                    ):
                        res = run(cfg, output_dir=out)
                    acc = float(res["final"]["accuracy"])
                    rows.append(
                        {
                            "task": task,
                            "strategy": strategy,
                            "option": key,
                            "value": value,
                            "accuracy": round(acc, 4),
                        }
                    )
                    print(
                        f"{task:<30} {strategy:<10} {key or '-':>15}={value:<6} {acc:.4f}",
                        flush=True,
                    )
                    write(rows, args.out)
    return rows


def write(rows: list[dict[str, object]], out: Path) -> None:
    """``defaults_sweep.csv``/``.json`` and a Markdown table (tasks as columns)."""
    import csv
    import json

    out.mkdir(parents=True, exist_ok=True)
    with (out / "defaults_sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "defaults_sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
    tasks = list(dict.fromkeys(str(r["task"]) for r in rows))
    lines = [
        "| strategy | option | " + " | ".join(tasks) + " |",
        "| --- | --- |" + " ---: |" * len(tasks),
    ]
    keyed = {(r["task"], r["strategy"], r["value"]): r["accuracy"] for r in rows}
    for strategy, value, option in dict.fromkeys(
        (r["strategy"], r["value"], r["option"]) for r in rows
    ):
        label = f"{option} = {value:g}" if option else "-"
        cells = [
            "-" if (t, strategy, value) not in keyed else f"{keyed[(t, strategy, value)]:.4f}"
            for t in tasks
        ]
        lines.append(f"| {strategy} | {label} | " + " | ".join(cells) + " |")
    (out / "defaults_sweep.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Parse, sweep, write."""
    args = parse(sys.argv[1:] if argv is None else argv)
    sweep(args)
    print((args.out / "defaults_sweep.md").read_text())


if __name__ == "__main__":
    main()
