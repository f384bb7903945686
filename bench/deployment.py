"""Where a deployed round's time goes on the 3-node local federation, and the round itself.

Flower 1.42's SuperNode runs every task (a train or an evaluate message) in a new
``flwr-clientapp`` process (``run_clientapp`` pulls one task input and exits); nothing of
Python's, TensorFlow's or the model's state survives from one task to the next. Side by side
in one run:

(a) one task's ClientApp process, phase by phase, in a fresh process each time (median of
    ``--repeats``): the interpreter, Flower's ClientApp runtime imports, TensorFlow,
    fedflower's ClientApp module, the experiment's config, the node's data, the model build
    and one local epoch of training (the hospitals task, Dense(128) -> Dense(1));
(b) the waits of Flower's polling loops between server and ClientApp, from their intervals
    (a task waits on average half of each): the SuperNode's pull when idle (3 s, fixed in
    Flower), its SuperExec's task poll (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``, 0.1 s in
    :data:`fedflower.deploy.federation.SUPERNODE_ENV`, Flower's default 1 s), the SuperNode's
    reply push (0.5 s) and the ServerApp's reply pull (0.2 s on a deployment with a round
    deadline, :data:`fedflower.server.deadline.DEPLOYED_POLL_INTERVAL`; Flower's grid 3 s);
(c) the deployed 3-node demo (``fedflower-deploy demo``: TLS, node authentication) with
    ``--rounds`` rounds, its per-round ``seconds`` from ``metrics.jsonl`` (the median of the
    rounds after the first), with the machine's load average beside it: once with a new
    ``flwr-clientapp`` process per task (``--cold-tasks``, Flower's own) and once with the
    tasks forked from a warm process per node (:mod:`fedflower.deploy.warm`, the default).

The predicted round is (b) + (a)'s process (the three nodes' tasks run at the same time on
the machine's cores) + the server's own evaluation; the rest of the measured round is what
the model does not name. Results: ``bench/results/deployment.{md,json}``.

Usage::

    python bench/deployment.py                      # 3 rounds, median of 3 process starts
    python bench/deployment.py --rounds 4 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TQDM_DISABLE", "1")

RESULTS = Path(__file__).resolve().parent / "results"

TASK = r"""
import json, os, sys, time
t = {"start": time.time()}
import flwr.supernode.runtime.run_clientapp  # what flwr-clientapp imports itself
t["flower runtime imports"] = time.time()
from fedflower.backend import quiet_tensorflow_import
quiet_tensorflow_import()
t["tensorflow import"] = time.time()
import fedflower.deploy.app  # the ClientApp module the task loads
t["fedflower ClientApp module"] = time.time()
from fedflower import keys
from fedflower.components import model_factory
from fedflower.deploy.config import experiment_config
from fedflower.deploy.local_data import node_data
cfg = experiment_config({keys.RUN_OVERRIDES: sys.argv[1]})
t["experiment config (Hydra)"] = time.time()
data = node_data({"partition-id": 0, "num-partitions": 3}, cfg)
t["node data"] = time.time()
model = model_factory(cfg, data.x_train.shape[1:], 2)()
t["model build + compile"] = time.time()
model.fit(data.x_train, data.y_train, epochs=1, batch_size=int(cfg.client.batch_size), verbose=0)
t["one local epoch (first fit: tracing)"] = time.time()
print(json.dumps(t))
"""

REST = """\
What the rest of a warm round is. A round is two tasks per node one after the other (train,
then the federated evaluate; `strategy.fraction_evaluate=0` leaves the second out), and each
task pays, besides its work, the SuperNode's pause between pulls when it has no message (3 s,
fixed in Flower 1.42's `start_client_internal`; on average 1.5 s per task), Flower's task
protocol (pull of task input and FAB, FAB install into the node's `FLWR_HOME`, reply push),
and what every new process pays once: the experiment config composed by Hydra, the node's
data read, the model built and traced by its first `fit`. With a load average several times
the core count, each of these takes several times its time on an idle machine."""

POLLS = {
    "SuperNode pull when idle (3 s, Flower)": 3.0,
    "SuperExec task poll (0.1 s)": 0.1,
    "SuperNode reply push (0.5 s, Flower)": 0.5,
    "ServerApp reply pull (0.2 s)": 0.2,
}
"""Flower's polling intervals between the ServerApp and a ClientApp; a task waits half."""


def task_phases(overrides: str) -> dict[str, float]:
    """Seconds of each phase of one ClientApp task in a fresh process (interpreter included)."""
    start = time.time()
    res = subprocess.run(
        [sys.executable, "-c", TASK, overrides], capture_output=True, text=True, check=True
    )
    stamps = json.loads(res.stdout.strip().splitlines()[-1])
    phases = {"interpreter start": stamps.pop("start") - start}
    last = start + phases["interpreter start"]
    for name, stamp in stamps.items():
        phases[name], last = stamp - last, stamp
    return phases


def deployed_rounds(rounds: int, workdir: Path, warm: bool) -> dict[str, Any]:
    """Run the 3-node demo; per-round seconds from its ``metrics.jsonl``."""
    load_before = os.getloadavg()[0]
    cmd = [
        str(Path(sys.executable).parent / "fedflower-deploy"),
        "demo",
        "--nodes",
        "3",
        "--workdir",
        str(workdir),
        f"num_rounds={rounds}",
        "num_clients=3",
        "progress=false",
        "output.plots=false",
        *([] if warm else ["--cold-tasks"]),
    ]
    started = time.monotonic()
    subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
    wall = time.monotonic() - started
    (metrics,) = workdir.rglob("metrics.jsonl")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line]
    seconds = [r["seconds"] for r in rows]
    return {
        "round_seconds": seconds,
        "median_after_first": statistics.median(seconds[1:] or seconds),
        "wall_seconds": wall,
        "load": [load_before, os.getloadavg()[0]],
    }


def main() -> None:
    """Measure, write ``bench/results/deployment.{md,json}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    overrides = "num_clients=3"
    load_tasks = os.getloadavg()[0]
    runs = [task_phases(overrides) for _ in range(args.repeats)]
    phases = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    deployed = {}
    for side, warm in (("new process per task", False), ("forked warm tasks", True)):
        with tempfile.TemporaryDirectory() as tmp:
            deployed[side] = deployed_rounds(args.rounds, Path(tmp) / "demo", warm)
    result = {
        "task_phases": phases,
        "task_seconds": sum(phases.values()),
        "load_during_tasks": load_tasks,
        "poll_waits": {k: v / 2 for k, v in POLLS.items()},
        "deployed": deployed,
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deployment.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "deployment.md").write_text(report(result, args))
    print(report(result, args))


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    """The markdown table of the breakdown and the measured rounds."""
    waits = sum(r["poll_waits"].values())
    lines = [
        "# Where a deployed round's time goes (3-node local federation, TLS + node auth)",
        "",
        f"`python bench/deployment.py --rounds {args.rounds} --repeats {args.repeats}`; "
        f"{r['cpus']} cores shared with other jobs.",
        "",
        "## One task's ClientApp process (fresh process, median of "
        f"{args.repeats}; load average {r['load_during_tasks']:.1f})",
        "",
        "| phase | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.2f} |" for k, v in r["task_phases"].items()],
        f"| **one task's process** | **{r['task_seconds']:.2f}** |",
        "",
        "## Polling waits per round (half of each interval on average)",
        "",
        "| loop | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.2f} |" for k, v in r["poll_waits"].items()],
        f"| **polling** | **{waits:.2f}** |",
        "",
        "## The deployed demo (`fedflower-deploy demo --nodes 3`, side by side)",
        "",
        "| ClientApp tasks | rounds (s) | median after the first (s) | load before / after |",
        "|---|---|---:|---|",
        *[
            f"| {side} | {', '.join(f'{s:.1f}' for s in d['round_seconds'])} | "
            f"**{d['median_after_first']:.1f}** | {d['load'][0]:.1f} / {d['load'][1]:.1f} |"
            for side, d in r["deployed"].items()
        ],
        "",
        f"Predicted with a new process per task: {r['task_seconds'] + waits:.1f} s per round "
        "(one task process per node per round, the nodes in parallel, plus polling; the "
        "evaluate round adds one more task per node when `strategy.fraction_evaluate` > 0). "
        "With forked warm tasks the interpreter start and the imports are paid once per node, "
        "when the SuperNode starts; a task is the experiment config, the node's data, the "
        "model build and the training.",
        "",
        REST,
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
