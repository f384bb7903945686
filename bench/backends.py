"""Seconds per round and final accuracy of the bundled experiments on each Keras backend.

Each (experiment, backend) pair is one ``fedflower backend=<name> [experiment=<name>]`` run in
its own process (Keras picks its backend once per process), one after another on the same
machine, one run each. From the run directory's ``metrics.jsonl`` and ``results.json``: the
first round's seconds (tracing/compilation included), the mean seconds of the later rounds,
and the final central-test accuracy and loss, with the machine's 1-minute load average at the
end of the run (the machine may be shared). A run that fails is listed with its last line.
Backends that are not installed are skipped. Results go to ``bench/results/backends.{json,md}``.

Usage::

    python bench/backends.py                       # default, digits CNN, text; every backend
    python bench/backends.py --backends jax torch --experiments default
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

RESULTS = Path(__file__).parent / "results"
EXPERIMENTS = {
    "default": [],
    "digits": ["experiment=digits"],
    "text": ["experiment=financial_news"],
}
MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def one_run(backend: str, overrides: list[str]) -> dict[str, object]:
    """One run in a fresh process: its round times and final metrics, or its error line."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "fedflower.cli", f"backend={backend}", *overrides,
            "progress=false", f"hydra.run.dir={tmp}",
        ]  # fmt: skip
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        results = Path(tmp) / "results.json"
        if done.returncode != 0 or not results.exists():
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            return {"error": lines[-1][:200]}
        rounds = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").open()]
        seconds = [r["seconds"] for r in rounds if "seconds" in r]
        final = json.loads(results.read_text())["final"]
    later = seconds[1:] or seconds
    return {
        "first_round_s": seconds[0],
        "round_s": sum(later) / len(later),
        "accuracy": final["accuracy"],
        "loss": final["loss"],
        "rounds": len(seconds),
        "load": psutil.getloadavg()[0],
    }


def table(rows: list[dict[str, object]]) -> str:
    """The Markdown table of the runs."""
    out = [
        "| experiment | backend | rounds | round 1 (s) | later rounds (s/round) "
        "| final accuracy | final loss | load average |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['experiment']} | {r['backend']} | fails: {r['error']} | | | | | |")
            continue
        out.append(
            f"| {r['experiment']} | {r['backend']} | {r['rounds']} | {r['first_round_s']:.2f} | "
            f"{r['round_s']:.3f} | {r['accuracy']:.4f} | {r['loss']:.4f} | {r['load']:.1f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(MODULES))
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS))
    parser.add_argument(
        "--merge", action="store_true", help="keep the other rows of bench/results/backends.json"
    )
    args = parser.parse_args()
    rows = []
    for experiment in args.experiments:
        for backend in args.backends:
            if importlib.util.find_spec(MODULES[backend]) is None:
                print(f"{backend}: not installed, skipped")
                continue
            row = {"experiment": experiment, "backend": backend}
            row.update(one_run(backend, EXPERIMENTS[experiment]))
            print(row, flush=True)
            rows.append(row)
            write(rows, args.merge)  # after every run: a partial table survives an interruption


def write(rows: list[dict[str, object]], merge: bool) -> None:
    """``bench/results/backends.{json,md}`` (with ``merge``, the file's other rows kept)."""
    RESULTS.mkdir(exist_ok=True)
    if merge and (RESULTS / "backends.json").exists():
        new = {(r["experiment"], r["backend"]) for r in rows}
        old = json.loads((RESULTS / "backends.json").read_text())
        rows = [r for r in old if (r["experiment"], r["backend"]) not in new] + rows
    (RESULTS / "backends.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = (
        "# Keras backends: seconds per round and final accuracy\n\n"
        "One run per experiment and backend, one after another on the same machine "
        f"({os.cpu_count()} cores, shared: the load average is the machine's 1-minute load "
        "at the end of each run), each in its own process. Reproduce with "
        "`python bench/backends.py`.\n\n" + table(rows) + "\n"
    )
    (RESULTS / "backends.md").write_text(text)


if __name__ == "__main__":
    main()
