"""Where a deployed round's time goes on the 3-node local federation, and the round itself.

Flower 1.42's SuperNode runs every task (a train or an evaluate message) in a new
``flwr-clientapp`` process (``run_clientapp`` pulls one task input and exits); nothing of
Python's, TensorFlow's or the model's state survives from one task to the next. fedflower's
warm SuperNodes (:mod:`fedflower.deploy.warm`) run a run's tasks in one worker process that
keeps the run's config, data and traced model. Side by side in one run:

(a) one task's ClientApp process, phase by phase, in a fresh process each time (median of
    ``--repeats``): the interpreter, Flower's ClientApp runtime imports, TensorFlow,
    fedflower's ClientApp module, the experiment's config, the node's data, the model build
    and one local epoch of training (the hospitals task, Dense(128) -> Dense(1)): what a
    task costs with a new process per task, and what a warm worker pays once per run;
(b) the deployed 3-node demo (``fedflower-deploy demo``: TLS, node authentication), its
    per-round ``seconds`` from ``metrics.jsonl`` (the median of the rounds after the first)
    and the machine's load average beside it: ``--cold-rounds`` rounds with a new
    ``flwr-clientapp`` process per task (``--cold-tasks``, Flower's own), ``--rounds`` with
    warm SuperNodes and with warm SuperNodes without federated evaluation
    (``strategy.fraction_evaluate=0``: one task per node and round instead of two); whether
    the first two give the same metrics in every round they share (same seed);
(c) the warm demo's round, phase by phase, from the wall-clock stamps each SuperNode writes
    to its log (:data:`fedflower.deploy.warm.TASK_LINE`, :data:`~fedflower.deploy.warm.NODE_LINE`):
    per message (train, evaluate) the median over nodes and rounds after the first.

Results: ``bench/results/deployment.{md,json}``.

Usage::

    python bench/deployment.py            # warm: 4 rounds, cold: 2, median of 3 process starts
    python bench/deployment.py --rounds 6 --cold-rounds 3 --repeats 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

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
What a warm round is. Each SuperNode runs its ClientApp tasks in one worker process that keeps
the run's config, data and traced model (`fedflower.deploy.warm`): after the first task, a
task's own work (train or evaluate) is the ClientApp row above; the first task of a run also
composes the config, reads the data, builds the model and traces it. The rest of the round is
message traffic: the SuperNode pulls each message and its objects from the SuperLink (TLS,
node authentication), the task pulls them again from the SuperNode's Runtime API, the reply
goes back the same way, and the ServerApp waits for the slowest node, pulls replies every
0.2 s, checks and aggregates them, evaluates the model centrally and configures the next
messages. A round is two message cycles per node: train, then the federated evaluation of
the round's aggregated model, which exists only once every train reply is in, so it cannot
travel with the train message; `strategy.fraction_evaluate=0` leaves it out (third row of
the first table). Polling left in a cycle: the SuperNode's pull when idle (0.25 s with warm
SuperNodes; Flower's fixed 3 s), its look for a task's reply (0.05 s; Flower's 0.5 s), the
SuperExec's task poll (0.1 s, `FLWR_SUPEREXEC_TASK_POLL_INTERVAL`) and the ServerApp's reply
pull (0.2 s). Each phase is Python work on 2 cores shared with other jobs: the load averages
are beside each table."""

PHASES = {
    "SuperNode pulls the message, SuperExec launches the task": ("node:pull_start", "launched"),
    "task worker picks it up": ("launched", "started"),
    "SuperNode pulls the message's objects from the SuperLink (the task waits)": (
        "started",
        "objects_stored",
    ),
    "task pulls its input from the SuperNode (message, Context, FAB)": (
        "objects_stored",
        "pull_task_input",
    ),
    "FAB install": ("install_from_fab_start", "install_from_fab"),
    "ClientApp (config, data, model from the cache; train or evaluate)": (
        "install_from_fab",
        "push_message_start",
    ),
    "reply to the SuperNode": ("push_message_start", "push_message"),
    "SuperNode sends the reply to the SuperLink": ("push_message", "node:pushed"),
    "ServerApp (other nodes, reply pull, aggregation, evaluation), next pull": (
        "node:pushed",
        "next:pull_start",
    ),
}
"""A warm message cycle, from the SuperNode's pull of a message to its pull of the next one."""


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


def node_messages(log: Path) -> list[dict[str, float]]:
    """The stamps of each message a warm SuperNode handled, from its log, in order."""
    from fedflower.deploy.warm import NODE_LINE, TASK_LINE

    messages: list[dict[str, float]] = []
    for line in log.read_text(errors="replace").splitlines():
        word, _, fields = line.partition(" ")
        if word == NODE_LINE and "pull_start" in (stamps := json.loads(fields)):
            messages.append({f"node:{k}": v for k, v in stamps.items()})
        elif word == NODE_LINE and messages:
            messages[-1].update({f"node:{k}": v for k, v in json.loads(fields).items()})
        elif word == TASK_LINE and messages:
            messages[-1].update(json.loads(fields))
    for message, following in itertools.pairwise(messages):
        message["next:pull_start"] = following["node:pull_start"]
    for message in messages:  # the node stores the objects while the task already asks
        if {"node:pulled", "started", "pull_task_input"} <= message.keys():
            stored = max(message["node:pulled"], message["started"])
            message["objects_stored"] = min(stored, message["pull_task_input"])
    return messages


def warm_breakdown(workdir: Path, rounds: int) -> dict[str, Any]:
    """Median seconds of each phase per message kind over nodes and rounds after the first."""
    per_kind: dict[str, list[dict[str, float]]] = {}
    first_tasks = []
    for log in sorted(workdir.rglob("supernode-*.log")):
        messages = node_messages(log)
        kinds = ["train", "evaluate"] if len(messages) >= 2 * rounds else ["train"]
        if messages and "install_from_fab" in messages[0]:
            first_tasks.append(messages[0]["push_message_start"] - messages[0]["install_from_fab"])
        for i, message in enumerate(messages[len(kinds) :], start=len(kinds)):
            if all(a in message and b in message for a, b in PHASES.values()):
                phases = {k: message[b] - message[a] for k, (a, b) in PHASES.items()}
                per_kind.setdefault(kinds[i % len(kinds)], []).append(phases)
    return {
        "phases": {
            kind: {k: statistics.median(p[k] for p in rows) for k in PHASES}
            for kind, rows in per_kind.items()
        },
        "first_task_clientapp": statistics.median(first_tasks) if first_tasks else None,
    }


SERVER_PHASES = (
    "train messages pushed (the model to 3 nodes)",
    "train messages out, last reply pulled (the nodes' cycles below)",
    "train replies checked and aggregated, evaluate messages configured",
    "evaluate messages pushed",
    "evaluate messages out, last reply pulled (the nodes' cycles below)",
    "centralized evaluation, the round's row and line, next train messages configured",
)
"""A warm round as the ServerApp sees it: from one push of train messages to the next."""


def server_rounds(output: str) -> list[dict[str, float]]:
    """Per round, the seconds of :data:`SERVER_PHASES` from the ServerApp's stamp lines."""
    from fedflower.deploy.app import SERVER_LINE

    pushes: list[list[float]] = []  # each push's start and end, the times of the pulls after it
    for line in output.splitlines():
        word, _, fields = line.partition(" ")
        if word != SERVER_LINE:
            continue
        stamps = json.loads(fields)
        if "pushed" in stamps:
            pushes.append([stamps["push_start"], stamps["pushed"]])
        elif pushes:
            pushes[-1].append(stamps["pulled"])
    rounds = []
    for train, evaluate, following in zip(pushes[::2], pushes[1::2], pushes[2::2], strict=False):
        marks = [*train[:2], max(train), *evaluate[:2], max(evaluate), following[0]]
        rounds.append(dict(zip(SERVER_PHASES, np.diff(marks).tolist(), strict=True)))
    return rounds


def deployed_rounds(rounds: int, workdir: Path, flags: list[str]) -> dict[str, Any]:
    """Run the 3-node demo; per-round seconds and metrics from its ``metrics.jsonl``."""
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
        *flags,
    ]
    from fedflower.deploy.app import SERVER_STAMPS_ENV

    started = time.monotonic()
    env = {**os.environ, SERVER_STAMPS_ENV: "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900, env=env)
    wall = time.monotonic() - started
    (metrics,) = workdir.rglob("metrics.jsonl")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line]
    seconds = [r["seconds"] for r in rows]
    keys = ("loss", "accuracy", "fed_loss", "fed_accuracy")
    return {
        "round_seconds": seconds,
        "median_after_first": statistics.median(seconds[1:] or seconds),
        "wall_seconds": wall,
        "load": [load_before, os.getloadavg()[0]],
        "metrics": [{k: r.get(k) for k in keys} for r in rows],
        "server_rounds": server_rounds(res.stdout),
    }


SIDES = {
    "new process per task (Flower's own)": ["--cold-tasks"],
    "warm SuperNodes": [],
    "warm SuperNodes, no federated evaluation": ["strategy.fraction_evaluate=0"],
}
"""The demo's configurations, run one after another."""


def main() -> None:
    """Measure, write ``bench/results/deployment.{md,json}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the warm demos")
    parser.add_argument("--cold-rounds", type=int, default=2, help="rounds with --cold-tasks")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_tasks = os.getloadavg()[0]
    runs = [task_phases("num_clients=3") for _ in range(args.repeats)]
    phases = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    deployed, breakdown = {}, {}
    for side, flags in SIDES.items():
        rounds = args.cold_rounds if "--cold-tasks" in flags else args.rounds
        with tempfile.TemporaryDirectory() as tmp:
            deployed[side] = deployed_rounds(rounds, Path(tmp) / "demo", flags)
            if "--cold-tasks" not in flags and not breakdown:
                breakdown = warm_breakdown(Path(tmp) / "demo", args.rounds)
    cold, warm = (deployed[s]["metrics"][: args.cold_rounds] for s in list(SIDES)[:2])
    result = {
        "task_phases": phases,
        "task_seconds": sum(phases.values()),
        "load_during_tasks": load_tasks,
        "deployed": deployed,
        "same_metrics_cold_and_warm": cold == warm,
        "warm_round": breakdown,
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deployment.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "deployment.md").write_text(report(result, args))
    print(report(result, args))


def breakdown_lines(r: dict[str, Any]) -> list[str]:
    """The warm round's phase table: one column per message kind."""
    phases = r["warm_round"]["phases"]
    kinds = list(phases)
    total = {kind: sum(phases[kind].values()) for kind in kinds}
    return [
        "| phase | " + " | ".join(f"{k} message" for k in kinds) + " |",
        "|---|" + "---:|" * len(kinds),
        *[f"| {n} | " + " | ".join(f"{phases[k][n]:.2f}" for k in kinds) + " |" for n in PHASES],
        "| **one message cycle** | " + " | ".join(f"**{total[k]:.2f}**" for k in kinds) + " |",
        "",
        f"Sum of the medians: **{sum(total.values()):.2f} s** per round. The first task of a "
        "run also composes the config, reads the node's data, builds the model and traces "
        f"its steps: its ClientApp phase took {r['warm_round']['first_task_clientapp']:.2f} s.",
    ]


def server_lines(r: dict[str, Any]) -> list[str]:
    """The warm round as the ServerApp saw it: median seconds over the rounds after the first."""
    rounds = r["deployed"]["warm SuperNodes"]["server_rounds"][1:]
    if not rounds:
        return ["(no ServerApp stamps)"]
    medians = {k: statistics.median(x[k] for x in rounds) for k in SERVER_PHASES}
    return [
        "| phase | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.2f} |" for k, v in medians.items()],
        f"| **round** | **{sum(medians.values()):.2f}** |",
    ]


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    """The markdown tables of the breakdown and the measured rounds."""
    warm = r["deployed"]["warm SuperNodes"]
    same = "yes" if r["same_metrics_cold_and_warm"] else "no"
    lines = [
        "# Where a deployed round's time goes (3-node local federation, TLS + node auth)",
        "",
        f"`python bench/deployment.py --rounds {args.rounds} --cold-rounds {args.cold_rounds} "
        f"--repeats {args.repeats}`; "
        f"{r['cpus']} cores shared with other jobs.",
        "",
        "## The deployed demo (`fedflower-deploy demo --nodes 3`, one after another)",
        "",
        "| ClientApp tasks | rounds (s) | median after the first (s) | load before / after |",
        "|---|---|---:|---|",
        *[
            f"| {side} | {', '.join(f'{s:.1f}' for s in d['round_seconds'])} | "
            f"**{d['median_after_first']:.1f}** | {d['load'][0]:.1f} / {d['load'][1]:.1f} |"
            for side, d in r["deployed"].items()
        ],
        "",
        "Same metrics (test and federated loss and accuracy in each of the first "
        f"{args.cold_rounds} rounds) with a new process per task and with warm SuperNodes: "
        f"**{same}**.",
        "",
        "## A warm round, phase by phase (seconds, median over the 3 nodes and the rounds after "
        f"the first; load {warm['load'][0]:.1f} / {warm['load'][1]:.1f})",
        "",
        "At the ServerApp (its stamps of each push of messages and pull of replies):",
        "",
        *server_lines(r),
        "",
        "At each SuperNode, one message cycle from its pull of the message to its pull of the "
        "next:",
        "",
        *breakdown_lines(r),
        "",
        "## One task's ClientApp in a fresh process (what a new process per task pays every "
        f"task; median of {args.repeats}; load average {r['load_during_tasks']:.1f})",
        "",
        "| phase | seconds |",
        "|---|---:|",
        *[f"| {k} | {v:.2f} |" for k, v in r["task_phases"].items()],
        f"| **one task's process** | **{r['task_seconds']:.2f}** |",
        "",
        REST,
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
