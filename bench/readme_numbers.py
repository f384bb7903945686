"""The numbers the README quotes for a first run, measured on this machine in one go.

Each part runs the commands a user runs, as child processes, and reads what they wrote:

* ``default``: ``fedflower`` with no overrides (the default experiment: 10 hospitals, FedAvg,
  10 rounds): its round lines, final metrics, bytes on the wire, the naive estimate, the
  seconds of the rounds and of the whole command (TensorFlow's start-up included);
* ``demo``: ``fedflower-deploy demo`` (what ``make deploy-demo`` runs: 3 SuperNodes, TLS and
  node authentication, 3 rounds): its lines, results and the files of its ``run/`` directory;
* ``demo-sim``: the demo's experiment simulated (``fedflower num_clients=3 num_rounds=3``);
* ``export``: ``fedflower export <demo run>/model.keras --to tflite`` (and ``--quantize
  dynamic``): file sizes and parity (on the default run's model when the demo is not run);
* ``flwr-sim``: ``num_clients=3 num_rounds=2 dataset.patients_per_hospital=300`` through
  ``fedflower-deploy simulate`` (``make flwr-sim``), ``fedflower simulation=ray`` and the
  default in-process engine: final accuracies side by side.

Writes ``bench/results/readme_numbers.{json,md}``. The machine is shared: wall times depend
on what else runs (the load average before and after each part is recorded).

Usage::

    nice python bench/readme_numbers.py                      # every part (~8 min on 2 cores)
    nice python bench/readme_numbers.py --parts default export
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedflower.outputs import RunDir

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PARTS = ("default", "demo", "demo-sim", "export", "flwr-sim")
SIM = ["num_clients=3", "num_rounds=2", "dataset.patients_per_hospital=300"]


def timed(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float, str]:
    """Run a command; its result, wall seconds and the load average it ran under."""
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done, seconds, f"{load0:.1f} -> {os.getloadavg()[0]:.1f}"


def round_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("round ")]


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """What the README quotes from a run's results.json."""
    totals, comm = results["totals"], results["communication"]
    return {
        "final_loss": round(results["final"]["loss"], 4),
        "final_accuracy": round(results["final"]["accuracy"], 4),
        "bytes_down": totals["bytes_down"],
        "bytes_up": totals["bytes_up"],
        "measured_bytes": comm["measured_bytes"],
        "naive_estimate_bytes": comm["naive_estimate_bytes"],
        "model_bytes": comm["model_bytes"],
        "rounds_seconds": round(totals["seconds"], 1),
    }


def default_run(work: Path) -> dict[str, Any]:
    out = work / "default"
    done, seconds, load = timed([str(BIN / "fedflower"), f"hydra.run.dir={out}"], work)
    results = RunDir(out).results()
    rows = RunDir(out).metrics()
    last = rows[-1]
    return {
        "command": "fedflower",
        **summary(results),
        "fed_loss": round(last["fed_loss"], 4),
        "fed_accuracy": round(last["fed_accuracy"], 4),
        "command_seconds": round(seconds, 1),
        "load": load,
        "round_lines": round_lines(done.stdout),
        "model": str(out / "model.keras"),
    }


def demo_run(work: Path) -> dict[str, Any]:
    cmd = [str(BIN / "fedflower-deploy"), "demo", "--nodes", "3", "num_rounds=3"]
    done, seconds, load = timed([*cmd, "--workdir", str(work / "demo")], REPO)
    (root,) = (work / "demo").iterdir()
    results = RunDir(root / "run").results()
    lines = done.stdout.splitlines()
    return {
        "command": "make deploy-demo (fedflower-deploy demo --nodes 3 num_rounds=3)",
        **summary(results),
        "command_seconds": round(seconds, 1),
        "load": load,
        "lines": [line for line in lines if not line.startswith(("│", "┌", "└", "├"))],
        "run_dir": sorted(p.name + ("/" if p.is_dir() else "") for p in (root / "run").iterdir()),
        "work_dir": sorted(p.name for p in root.iterdir()),
        "model": str(root / "run" / "model.keras"),
    }


def demo_simulated(work: Path) -> dict[str, Any]:
    out = work / "demo-sim"
    cmd = [str(BIN / "fedflower"), "num_clients=3", "num_rounds=3", f"hydra.run.dir={out}"]
    _, seconds, load = timed(cmd, work)
    results = RunDir(out).results()
    return {"command": "fedflower num_clients=3 num_rounds=3", **summary(results),
            "command_seconds": round(seconds, 1), "load": load}  # fmt: skip


def export_run(model: str, source: str, work: Path) -> dict[str, Any]:
    cmd = [str(BIN / "fedflower"), "export", model, "--to", "tflite"]
    text, _, _ = timed([*cmd, "--out", str(work / "model.tflite")], work)
    reports = {}
    for name, extra in (("none", []), ("dynamic", ["--quantize", "dynamic"])):
        out = work / f"model-{name}.tflite"
        done, _, _ = timed([*cmd, "--out", str(out), *extra, "--json"], work)
        reports[name] = {k: v for k, v in json.loads(done.stdout).items() if "path" not in k}
    return {"model": source, "lines": text.stdout.splitlines(), "reports": reports}


def flwr_sim_runs(work: Path) -> dict[str, Any]:
    done, seconds, load = timed(
        [str(BIN / "fedflower-deploy"), "simulate", "--nodes", "3", "--workdir", str(work / "sim"),
         *SIM[1:]],
        REPO,
    )  # fmt: skip
    (root,) = (work / "sim").iterdir()
    flwr_sim = RunDir(root / "run").results()
    engines: dict[str, Any] = {
        "flwr-sim": {**summary(flwr_sim), "command_seconds": round(seconds, 1)}
    }
    for engine in ("ray", "local"):
        out = work / engine
        _, secs, _ = timed([str(BIN / "fedflower"), *SIM, f"simulation={engine}",
                            f"hydra.run.dir={out}"], work)  # fmt: skip
        results = RunDir(out).results()
        engines[engine] = {**summary(results), "command_seconds": round(secs, 1)}
    return {"overrides": " ".join(SIM), "load": load, "engines": engines,
            "lines": round_lines(done.stdout)}  # fmt: skip


def without_paths(value: Any, work: str) -> Any:
    """``value`` with the temporary work directory written as ``…`` (no machine paths)."""
    if isinstance(value, str):
        return value.replace(work, "…")
    if isinstance(value, list):
        return [without_paths(v, work) for v in value]
    if isinstance(value, dict):
        return {k: without_paths(v, work) for k, v in value.items()}
    return value


def markdown(record: dict[str, Any]) -> str:
    lines = [f"# README numbers ({record['machine']}, {record['date']})", ""]
    for part, value in record["parts"].items():
        lines += [f"## {part}", "", "```json", json.dumps(value, indent=2), "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args()
    parts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "default" in args.parts or "export" in args.parts:
            parts["default"] = default_run(work)
            print(json.dumps(parts["default"], indent=2), flush=True)
        if "demo" in args.parts:
            parts["demo"] = demo_run(work)
            print(json.dumps(parts["demo"], indent=2), flush=True)
        if "demo-sim" in args.parts:
            parts["demo-sim"] = demo_simulated(work)
            print(json.dumps(parts["demo-sim"], indent=2), flush=True)
        if "export" in args.parts:
            source = "demo" if "demo" in parts else "default"
            parts["export"] = export_run(parts[source]["model"], source, work)
            print(json.dumps(parts["export"], indent=2), flush=True)
        if "flwr-sim" in args.parts:
            parts["flwr-sim"] = flwr_sim_runs(work)
            print(json.dumps(parts["flwr-sim"], indent=2), flush=True)
        for value in parts.values():
            value.pop("model", None)
        parts = without_paths(parts, tmp)
    path = RESULTS / "readme_numbers.json"
    earlier = json.loads(path.read_text())["parts"] if path.is_file() else {}
    machine = f"{os.cpu_count()}-core {platform.machine()}, shared with other jobs"
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for value in parts.values():
        value["measured"] = date
    record = {"machine": machine, "date": date, "parts": {**earlier, **parts}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "readme_numbers.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "readme_numbers.md").write_text(markdown(record))
    print(f"wrote {RESULTS / 'readme_numbers.json'} and .md")


if __name__ == "__main__":
    main()
