"""Per-site accuracy of global, personalized, drift-corrected and local-only training.

Each task runs once per method, in this one process, with the same seed and the same
clients, and the per-client evaluation of the final round (``per_client`` in
``results.json``) gives the columns:

* global acc: the global model on the central test set;
* personal mean / worst: mean and worst accuracy over the sites of the model each site
  ends with (its personal model; the global one for strategies without personalization;
  the site's own for local-only), on its validation split;
* gain (lose): sites whose model beats (falls below) their local-only model
  (``baseline=local``, same budget);
* bytes: measured traffic of the run (both directions).

Below each task's table: the goals (digits Dirichlet(0.1): a personalized mean >= 0.90;
hospitals: a method with which no site loses from joining) and the methods that do not help
(personal mean not above FedAvg's). The same tables go into the personalization how-to page
(between its ``<!-- bench:personalization -->`` markers).

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
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DOCS_PAGE = (
    Path(__file__).resolve().parents[1] / "docs" / "how-to" / "per-client-and-personalization.md"
)
BEGIN, END = "<!-- bench:personalization -->", "<!-- /bench:personalization -->"
SMALL = ["output.plots=false", "output.save_model=false", "progress=false"]
TASKS: dict[str, list[str]] = {  # 10 hospitals and digits clients, 5 text clients
    "hospitals": ["num_rounds=20"],
    "hospitals, case_mix=2": ["num_rounds=20", "dataset.case_mix=2.0"],
    "digits, Dirichlet(0.5)": [
        "experiment=digits_dirichlet",
        "partition.alpha=0.5",
        "num_rounds=5",
    ],
    "digits, Dirichlet(0.1)": [
        "experiment=digits_dirichlet",
        "partition.alpha=0.1",
        "num_rounds=5",
    ],
    "financial_news": ["experiment=financial_news", "num_rounds=5"],
}
"""Each task's overrides: the hospitals' small models run 20 rounds, the others 5."""
SGD = ["client.optimizer._target_=keras.optimizers.SGD", "client.learning_rate=0.1"]
"""Plain SGD (lr 0.1) instead of Adam: SCAFFOLD's option II is derived for SGD steps."""
METHODS: dict[str, list[str]] = {
    "local-only": ["baseline=local"],
    "FedAvg": [],
    "FedProx": ["strategy=fedprox"],
    "SCAFFOLD": ["strategy=scaffold"],
    "FedAvg (SGD)": SGD,
    "SCAFFOLD (SGD)": ["strategy=scaffold", *SGD],
    "FedNova": ["strategy=fednova"],
    "FedDyn": ["strategy=feddyn"],
    "finetune": ["personalization=finetune"],
    "FedPer": ["personalization=fedper"],
    "FedRep": ["personalization=fedrep"],
    "FedBN": ["personalization=fedbn"],
    "Ditto": ["personalization=ditto"],
    "APFL": ["personalization=apfl"],
}


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line (parsed before TensorFlow is imported, so --help is instant)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--rounds", type=int, help="rounds of every run (default: the task's)")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every run"
    )
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
    gains = [] if only_local or not local else [accs[s] - local[s] for s in accs if s in local]
    return {
        "global_accuracy": None if only_local else results["final"]["accuracy"],
        "personal_mean": sum(accs.values()) / len(accs),
        "personal_worst": min(accs.values()),
        "sites_gaining": None if only_local else sum(g > 0 for g in gains),
        "sites_losing": None if only_local else sum(g < 0 for g in gains),
        "sites": len(accs),
        "bytes": 0 if only_local else results["communication"]["measured_bytes"],
    }


def table_lines(rows: dict[str, dict]) -> list[str]:
    """One task's Markdown table."""
    lines = [
        "| method | global acc | personal mean / worst | sites that gain (lose) | bytes |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method, r in rows.items():
        if "not_applicable" in r:
            lines.append(f"| {method} | not applicable: {r['not_applicable']} | | | |")
            continue
        glob = "-" if r["global_accuracy"] is None else f"{r['global_accuracy']:.3f}"
        gain = "-"
        if r["sites_gaining"] is not None:
            gain = f"{r['sites_gaining']} ({r.get('sites_losing', 0)}) of {r['sites']}"
        lines.append(
            f"| {method} | {glob} | {r['personal_mean']:.3f} / {r['personal_worst']:.3f} "
            f"| {gain} | {r['bytes'] / 2**20:.1f} MiB |"
        )
    return lines


def findings(task: str, rows: dict[str, dict]) -> list[str]:
    """The goals measured on this task and the methods that do not help."""
    done = {m: r for m, r in rows.items() if "not_applicable" not in r}
    joined = {m: r for m, r in done.items() if m != "local-only"}
    if not joined:
        return []
    best = max(joined, key=lambda m: joined[m]["personal_mean"])
    fewest = min(joined, key=lambda m: (joined[m]["sites_losing"], -joined[m]["personal_mean"]))
    out = [f"- best personal mean: {best} {joined[best]['personal_mean']:.3f}"]
    if "Dirichlet(0.1)" in task:
        met = "met" if joined[best]["personal_mean"] >= 0.90 else "not met"
        out[0] += f" (goal >= 0.90: {met})"
    losing = joined[fewest]["sites_losing"]
    out.append(
        f"- fewest sites losing from joining: {fewest}, {losing} of {joined[fewest]['sites']}"
        + (
            " (goal on the hospitals: none loses: " + ("met)" if losing == 0 else "not met)")
            if task.startswith("hospitals")
            else ""
        )
    )
    if "local-only" in done:
        alone = done["local-only"]["personal_mean"]
        behind = [m for m, r in joined.items() if r["personal_mean"] <= alone]
        if behind:
            out.append(f"- not above training alone ({alone:.3f} mean): {', '.join(behind)}")
    if "FedAvg" in joined:
        base = joined["FedAvg"]["personal_mean"]
        idle = [m for m, r in joined.items() if m != "FedAvg" and r["personal_mean"] <= base]
        if idle:
            out.append(f"- do not help over FedAvg ({base:.3f} mean): {', '.join(idle)}")
    return out


def tables(table: dict[str, dict[str, dict]]) -> list[str]:
    """Every task's table and findings (the part the how-to page shows too)."""
    lines: list[str] = []
    for task, rows in table.items():
        lines += ["", f"### {task}", "", *table_lines(rows), "", *findings(task, rows)]
    return lines


def markdown(table: dict[str, dict[str, dict]], command: str, conditions: str) -> str:
    """The results as a Markdown table per task, with the command that made them."""
    lines = [
        "# Personalization: every site's accuracy",
        "",
        f"`{command}`",
        "",
        conditions,
        "",
        "personal mean / worst: accuracy of the model each site ends with, on its validation",
        "split (global model for strategies without personalization). sites that gain (lose):",
        "sites whose model beats (falls below) their local-only model. Seed 0, one process;",
        "rounds: 20 on the hospitals, 5 on digits and text (unless `--rounds`).",
    ]
    return "\n".join([*lines, *tables(table)]) + "\n"


def main(argv: list[str]) -> None:
    """Run the tasks and methods asked for; write the JSON and Markdown results."""
    args = parse(argv)
    from fedflower.errors import ConfigError

    small = [*SMALL, *([f"num_rounds={args.rounds}"] if args.rounds else []), *args.set]
    methods = ["local-only", *[m for m in args.methods if m != "local-only"]]
    table: dict[str, dict[str, dict]] = {}
    started = time.monotonic()
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
            elapsed = time.monotonic() - started
            print(f"{elapsed:7.0f}s", task, method, table[task][method], flush=True)
            write(table, argv, elapsed)  # a stopped bench keeps its rows


def write(table: dict[str, dict[str, dict]], argv: list[str], seconds: float) -> None:
    """``bench/results/personalization.{json,md}`` and the how-to page's tables."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "personalization.json").write_text(json.dumps(table, indent=1) + "\n")
    quoted = " ".join(f"'{a}'" if " " in a or "(" in a else a for a in argv)
    command = f"python bench/personalization.py {quoted}".strip()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    conditions = (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores; "
        f"load average (1, 5, 15 min) at the end: {load}; {seconds / 60:.1f} min in all."
    )
    (RESULTS / "personalization.md").write_text(markdown(table, command, conditions))
    update_docs(RESULTS / "personalization.md")


def update_docs(results: Path) -> None:
    """Put the results file's tables between the how-to page's markers."""
    text = results.read_text()
    generated = text[text.index("\n### ") :].strip("\n") if "\n### " in text else ""
    page = DOCS_PAGE.read_text()
    if BEGIN not in page:
        return
    before, rest = page.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    DOCS_PAGE.write_text(f"{before}{BEGIN}\n{generated}\n{END}{after}")


if __name__ == "__main__":
    main(sys.argv[1:])
