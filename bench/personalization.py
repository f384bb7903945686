"""Per-site accuracy of global, personalized, drift-corrected and local-only training.

Each task runs once per method, in this one process, with the same seed and the same
clients, and the per-client evaluation of the final round (``per_client`` in
``results.json``) gives the columns:

* global acc: the global model on the central test set;
* personal mean / worst: mean and worst accuracy over the sites of the model each site
  ends with (its personal model; the global one for strategies without personalization;
  the site's own for local-only), on its validation split;
* gain: sites whose model beats their local-only model (``baseline=local``, same budget);
* bytes: measured traffic of the run (both directions).

Tasks: ``hospitals`` (the default federation, and with a stronger case-mix shift),
``digits`` with Dirichlet(0.5) and Dirichlet(0.1) label shares, and the ``financial_news``
text task. Results go to ``bench/results/personalization.{json,md}``.

Usage::

    python bench/personalization.py                              # every task and method
    python bench/personalization.py --tasks "digits, Dirichlet(0.1)" --methods fedavg fedper
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SMALL = ["num_rounds=5", "output.plots=false", "output.save_model=false", "progress=false"]
TASKS: dict[str, list[str]] = {
    "hospitals": [],
    "hospitals, case_mix=2": ["dataset.case_mix=2.0"],
    "digits, Dirichlet(0.5)": ["experiment=digits_dirichlet", "partition.alpha=0.5"],
    "digits, Dirichlet(0.1)": ["experiment=digits_dirichlet", "partition.alpha=0.1"],
    "financial_news": ["experiment=financial_news"],
}
METHODS: dict[str, list[str]] = {
    "local-only": ["baseline=local"],
    "FedAvg": [],
    "FedProx": ["strategy=fedprox"],
    "FedNova": ["strategy=fednova"],
    "FedDyn": ["strategy=feddyn"],
    "finetune": ["personalization=finetune"],
    "FedPer": ["personalization=fedper"],
    "FedBN": ["personalization=fedbn"],
    "Ditto": ["personalization=ditto"],
}
MISSING = ("SCAFFOLD", "FedRep", "APFL")
"""Methods of the comparison fedflower does not implement (rows marked as such)."""


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line (parsed before TensorFlow is imported, so --help is instant)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per run (default 5)")
    return parser.parse_args(argv)


def run_one(overrides: list[str]) -> dict[str, Any]:
    """One run's results (in a temporary directory)."""
    from hydra import compose, initialize_config_module

    from fedflower.experiment import run

    with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with tempfile.TemporaryDirectory() as out:
        return run(cfg, out)


def row(results: dict[str, Any], local: dict[str, float] | None, only_local: bool) -> dict:
    """The table's columns from one run's results and the local-only accuracies per site."""
    block = results["per_client"]
    key = "local_accuracy" if only_local else "personal_accuracy"
    accs = {s["client"]: s.get(key, s.get("accuracy")) for s in block["sites"]}
    accs = {k: v for k, v in accs.items() if v is not None}
    if only_local:
        local = accs
    gains = [accs[s] - local[s] for s in accs if local and s in local] if local else []
    return {
        "global_accuracy": None if only_local else results["final"]["accuracy"],
        "personal_mean": sum(accs.values()) / len(accs),
        "personal_worst": min(accs.values()),
        "sites_gaining": None if only_local else sum(g > 0 for g in gains),
        "sites": len(accs),
        "bytes": 0 if only_local else results["communication"]["measured_bytes"],
    }


def markdown(table: dict[str, dict[str, dict]], command: str) -> str:
    """The results as a Markdown table per task, with the command that made them."""
    lines = [
        "# Personalization: every site's accuracy",
        "",
        f"`{command}` (5 rounds per run unless `--rounds`; seed 0; one process).",
        "",
        "personal mean / worst: accuracy of the model each site ends with, on its validation",
        "split (global model for strategies without personalization). gain: sites whose model",
        "beats their local-only model. Not implemented: " + ", ".join(MISSING) + ".",
    ]
    for task, rows in table.items():
        lines += ["", f"## {task}", "", "| method | global acc | personal mean / worst | "
                  "sites that gain | bytes |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for method, r in rows.items():
            if "not_applicable" in r:
                lines.append(f"| {method} | not applicable: {r['not_applicable']} | | | |")
                continue
            glob = "-" if r["global_accuracy"] is None else f"{r['global_accuracy']:.3f}"
            gain = "-" if r["sites_gaining"] is None else f"{r['sites_gaining']} of {r['sites']}"
            lines.append(
                f"| {method} | {glob} | {r['personal_mean']:.3f} / {r['personal_worst']:.3f} "
                f"| {gain} | {r['bytes'] / 2**20:.1f} MiB |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    """Run the tasks and methods asked for; write the JSON and Markdown results."""
    args = parse(argv)
    from fedflower.errors import ConfigError

    small = [*SMALL, f"num_rounds={args.rounds}"]
    methods = ["local-only", *[m for m in args.methods if m != "local-only"]]
    table: dict[str, dict[str, dict]] = {}
    for task in args.tasks:
        local: dict[str, float] | None = None
        table[task] = {}
        for method in methods:
            try:
                results = run_one([*TASKS[task], *small, *METHODS[method]])
            except ConfigError as exc:  # e.g. FedBN on a model without normalisation layers
                table[task][method] = {"not_applicable": str(exc)}
                continue
            if not results["per_client"]["sites"]:
                table[task][method] = {"not_applicable": "no client evaluation succeeded"}
                continue
            table[task][method] = row(results, local, method == "local-only")
            if method == "local-only":
                sites = results["per_client"]["sites"]
                local = {s["client"]: s["local_accuracy"] for s in sites}
            print(task, method, table[task][method], flush=True)
            write(table, argv)  # after every run: a long bench stopped early keeps its rows


def write(table: dict[str, dict[str, dict]], argv: list[str]) -> None:
    """``bench/results/personalization.{json,md}``."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "personalization.json").write_text(json.dumps(table, indent=1) + "\n")
    quoted = " ".join(f"'{a}'" if " " in a else a for a in argv)
    command = f"python bench/personalization.py {quoted}"
    (RESULTS / "personalization.md").write_text(markdown(table, command.strip()))


if __name__ == "__main__":
    main(sys.argv[1:])
