"""Clients per second with ``simulation.workers`` = 1 and 2, and a model of the speed-up beyond.

Side by side in one run, interleaved, each a median of ``--repeats``:

(a) the round loop of ``experiment.run`` (wall clock, and the CPU time of its processes:
    cores busy) with ``simulation.workers=1`` (the in-process engine) and ``=2`` (worker
    processes), on each task of ``--tasks``: ``hospitals`` (the default
    experiment: Dense(128) -> Dense(1), one local epoch, batch 32) and ``digits``
    (``experiment=digits``: the small CNN, two local epochs, batch 16); every client trains
    and evaluates every round, central evaluation. The workers start with the run and the
    server process waits for them (it trains no client itself), so the first round holds
    their start-up (spawn, imports, model built and traced) and every later round is the
    steady state; the loop time is the sum of the rounds' ``seconds`` after the first, the
    start-up is reported apart; the rows of ``metrics.jsonl`` are checked to be identical;
(b) the per-message cost of each engine with a ClientApp that only echoes the model it is
    sent (Flower's wire serialization both ways, shared memory and pipes for the pool);
(c) one client's work (``KerasClient.fit`` then ``evaluate``) and the server's own work per
    round (averaging the updates, central evaluation), timed in this process.

The model: a round of n clients on W workers takes ``s + 2 n c_W + ceil(n / W) t`` where ``s``
is the server's own work per round, ``c_W`` the per-message cost the server process pays (a
client gets two messages per round: train and evaluate) and ``t`` one client's work, all
from (b) and (c); the two-worker prediction is printed next to the measured round for a check.
It predicts the speed-up on 8, 32 and 64 cores. Results: ``bench/results/parallel.{md,json}``.

Usage::

    python bench/parallel.py                         # 24 clients x 8 rounds, median of 3
    python bench/parallel.py --tasks digits --clients 40 --rounds 4 --repeats 1
"""

from __future__ import annotations

import argparse
import functools
import io
import itertools
import json
import math
import os
import platform
import statistics
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TQDM_DISABLE", "1")

RESULTS = Path(__file__).resolve().parent / "results"
TIMING = {"seconds", "elapsed"}
CORES = (2, 8, 32, 64)
MESSAGES = 2
"""Messages (each with its reply) a client gets per round: train and evaluate
(``strategy.fraction_evaluate=1``, the default)."""
TASKS = {"hospitals": [], "digits": ["experiment=digits"]}
EXPLANATION = """\
How to read it. `load` is the machine's 1-minute load average during each side's runs: above
the number of cores, other jobs compete for them, the ratio moves from run to run, and a side
with two processes can take a larger share of the contended cores than a side with one (a
ratio above 2 on 2 cores comes from that). `cores busy` is the CPU time of the side's
processes (the server process and its workers, every thread) over rounds 2.. divided by their
wall clock: one process keeps about one core busy (one TensorFlow thread per process,
`simulation.tf_threads=1`); the two-worker side's shortfall from 2 is the time its cores wait:
the server's own work between the rounds' phases, which no worker shares, and the last
clients of a phase (a worker holds a second task while more wait, so it does not wait for
the server between two clients). The line under the two-worker round splits it by how many
workers held a task, as the server process sees it (from sending a task until taking its
answer): `none` is the server's own work between phases (aggregation, central evaluation,
recording, serializing the next phase's first messages), `one` mostly the last client of a
phase. The model's inputs are measured on this machine in the same
run: the per-message cost `c` the server process pays with worker processes
(serializing the message once into shared memory, reading the reply from a pipe and inflating
it), one client's work `t`, and the server's own work per round `s`. Its prediction for W cores
assumes W idle cores and the same `t` per client on each (no memory-bandwidth contention):
the speed-up stops growing once `ceil(n / W) t` is small next to `s + 2 n c`, i.e. at about
`W = t / 2c` workers when `s` is small, and it is bounded by `(s + n (t + 2 c)) / (s + 2 n c)`;
with `c` well under a millisecond and `t` around 0.1 s that bound is beyond 64 cores for rounds of
100 clients or more, while rounds of 20 clients are bounded by the server's own work `s`.
"""


def parse() -> argparse.Namespace:
    """The command line, parsed before TensorFlow is imported: ``--help`` is instant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs; median kept")
    parser.add_argument("--messages", type=int, default=200, help="echo messages per engine")
    return parser.parse_args()


def make_cfg(task: str, clients: int, rounds: int, workers: int) -> Any:
    from hydra import compose, initialize_config_module

    overrides = [
        *TASKS[task],
        f"num_clients={clients}",
        f"num_rounds={rounds}",
        f"simulation.workers={workers}",
        "simulation.start_workers_after=0",  # workers from the start: round 1 holds their start-up
        "progress=false",
        "output.plots=false",
        "output.save_model=false",
        "checkpoint.every=0",
    ]
    with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def run_side(task: str, clients: int, rounds: int, workers: int) -> dict[str, Any]:
    """One run: loop seconds after round 1, start-up seconds, load, and its metric rows."""
    import psutil

    from fedflower.engine import pool
    from fedflower.experiment import run
    from fedflower.outputs.writer import RunWriter

    waits = functools.partial(pool.PoolGrid, inline=False)  # the server trains no client
    cpu: list[float] = []  # CPU seconds of this process and its workers after rounds 1 and last
    ends: list[float] = []  # wall clock at each round's end
    held: list[tuple[float, int]] = []  # (wall clock, workers holding a task) at each change
    write_row, send, receive = RunWriter.row, pool.WorkerPool.send, pool.WorkerPool.receive

    def row(self: Any, values: dict[str, Any]) -> None:
        ends.append(time.perf_counter())
        if len(ends) in (1, rounds):  # the loop's ends only: reading the processes takes ~0.6 ms
            alive = psutil.Process().children(recursive=True)
            cpu.append(time.process_time() + sum(sum(p.cpu_times()[:2]) for p in alive))
        write_row(self, values)

    def sent(self: Any, *args: Any) -> None:
        send(self, *args)
        held.append((time.perf_counter(), len(self.busy)))

    def received(self: Any, *args: Any) -> Any:
        answers = receive(self, *args)
        held.append((time.perf_counter(), len(self.busy)))
        return answers

    with (
        tempfile.TemporaryDirectory() as out,
        redirect_stdout(io.StringIO()),
        mock.patch.object(pool, "PoolGrid", waits),
        mock.patch.object(RunWriter, "row", row),
        mock.patch.object(pool.WorkerPool, "send", sent),
        mock.patch.object(pool.WorkerPool, "receive", received),
    ):
        t0, load0 = time.perf_counter(), psutil.getloadavg()[0]
        results = run(make_cfg(task, clients, rounds, workers), output_dir=out)
        wall = time.perf_counter() - t0
        lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    loop = sum(r["seconds"] for r in rows[1:])
    return {
        "loop": loop,
        "startup": wall - loop,
        "clients_per_s": clients * (rounds - 1) / loop,
        "cores": (cpu[-1] - cpu[0]) / loop,  # CPU seconds per second over rounds 2..
        "accuracy": results["final"]["accuracy"],
        "load": (load0 + psutil.getloadavg()[0]) / 2,
        "rows": [{k: v for k, v in r.items() if k not in TIMING} for r in rows],
        **{f"held_{k}": v for k, v in holding(held, ends[0], ends[-1], rounds - 1).items()},
    }


def holding(
    held: list[tuple[float, int]], start: float, end: float, rounds: int
) -> dict[int, float]:
    """Seconds per round during which 0, 1 and 2 workers held a task.

    Seen from the server process: a worker holds a task from when it is sent until its
    answer is taken.
    """
    spent = dict.fromkeys((0, 1, 2), 0.0)
    for (at, count), (until, _) in itertools.pairwise(held):
        if start <= at and until <= end:
            spent[min(count, 2)] += (until - at) / rounds
    return spent


def echo_app() -> Any:
    """A ClientApp that replies with the arrays it is sent: only the engine's cost remains."""
    from flwr.app import Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from fedflower import keys

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Any) -> Message:
        arrays = msg.content.array_records[keys.ARRAYS]
        content = {keys.ARRAYS: arrays, keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 1})}
        return Message(RecordDict(content), reply_to=msg)

    return app


def message_cost(workers: int, messages: int, floats: int) -> float:
    """Seconds per message of an echo round of ``messages`` nodes (after a warm-up round)."""
    import numpy as np
    from flwr.app import ArrayRecord, Message, MessageType, RecordDict

    from fedflower import keys
    from fedflower.engine.local import LocalGrid
    from fedflower.engine.pool import PoolGrid

    grid = LocalGrid(echo_app(), messages)
    if workers > 1:
        grid = PoolGrid(echo_app(), messages, workers, threads=0)
    model = ArrayRecord([np.ones(floats, dtype=np.float32)])

    def round_trip() -> float:
        batch = [
            Message(RecordDict({keys.ARRAYS: model}), dst_node_id=n, message_type=MessageType.TRAIN)
            for n in range(1, messages + 1)
        ]
        t0 = time.perf_counter()
        list(grid.send_and_receive(batch))
        return (time.perf_counter() - t0) / messages

    try:
        round_trip()  # workers started and warm
        return statistics.median(round_trip() for _ in range(3))
    finally:
        if isinstance(grid, PoolGrid):
            grid.close()


def work_seconds(task: str, clients: int) -> tuple[float, int]:
    """One client's fit + evaluate (median of 5 after a first), and the model's size."""
    from fedflower import keys
    from fedflower.client.keras_client import KerasClient
    from fedflower.components import model_factory
    from fedflower.experiment import load_federation

    cfg = make_cfg(task, clients, 2, 1)
    source, fed = load_federation(cfg)
    model = model_factory(cfg, source.input_shape, source.num_classes)()
    client = KerasClient(model, fed.client(0), cid=0, seed=0)
    weights = model.get_weights()
    config = {
        keys.LEARNING_RATE: cfg.client.learning_rate,
        keys.BATCH_SIZE: cfg.client.batch_size,
        keys.LOCAL_EPOCHS: cfg.client.local_epochs,
    }
    client_times = []
    for _ in range(6):
        t0 = time.perf_counter()
        client.fit(weights, config)
        client.evaluate(weights, {})
        client_times.append(time.perf_counter() - t0)
    return statistics.median(client_times[1:]), sum(int(w.size) for w in weights)


def round_seconds(s: float, c: float, t: float, n: int, workers: int) -> float:
    """The model's round of ``n`` clients on ``workers`` processes (1: the server's own)."""
    return s + MESSAGES * n * c + math.ceil(n / workers) * t


def predict(s: float, costs: dict[int, float], t: float, n: int, cores: int) -> float:
    """Speed-up over one process for rounds of ``n`` clients on ``cores`` workers."""
    return round_seconds(s, costs[1], t, n, 1) / round_seconds(s, costs[2], t, n, cores)


def measure(args: argparse.Namespace, task: str) -> dict[str, Any]:
    sides: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for workers in (1, 2) if repeat % 2 == 0 else (2, 1):
            sides[workers].append(run_side(task, args.clients, args.rounds, workers))
            print(f"{task} workers={workers}: loop {sides[workers][-1]['loop']:.2f} s", flush=True)
    identical = all(one["rows"] == two["rows"] for one, two in zip(sides[1], sides[2], strict=True))
    median = {
        w: {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "rows"}
        for w, runs in sides.items()
    }
    t, floats = work_seconds(task, args.clients)
    costs = {w: message_cost(w, args.messages, floats) for w in (1, 2)}
    fastest = min(r["loop"] for r in sides[1])
    # the server's own work per round: what the fastest one-process round spent beyond its
    # clients' work and messages (aggregation, central evaluation, metering, recording, and
    # the ClientApp's own handling of a message around the client's fit and evaluate)
    one_round = fastest / (args.rounds - 1)
    server = max(0.0, one_round - args.clients * (t + MESSAGES * costs[1]))
    return {
        "median": median,
        "fastest_loop": fastest,
        "identical": identical,
        "costs": costs,
        "client": t,
        "messages_per_client": MESSAGES,
        "server": server,
        "floats": floats,
    }


def report(args: argparse.Namespace, m: dict[str, Any]) -> list[str]:
    one, two = m["median"][1], m["median"][2]
    ratio = two["clients_per_s"] / one["clients_per_s"]
    n, t, costs = args.clients, m["client"], m["costs"]
    s = m["server"]
    lines = [
        "side         loop s  clients/s  cores busy  start-up s  final acc  load",
        *(
            f"workers={w}  {r['loop']:7.2f}  {r['clients_per_s']:9.2f}  {r['cores']:10.2f}"
            f"  {r['startup']:10.2f}  {r['accuracy']:9.4f}  {r['load']:4.1f}"
            for w, r in ((1, one), (2, two))
        ),
        "",
        f"throughput ratio (workers=2 / workers=1): {ratio:.2f}x",
        f"metrics.jsonl rows identical in every repeat: {m['identical']}",
        "",
        f"per-message cost in the server process (echo ClientApp, the model's "
        f"{m['floats'] * 4 / 1024:.0f} KiB):",
        f"  in-process engine {costs[1] * 1e3:.3f} ms, 2 worker processes {costs[2] * 1e3:.3f} ms",
        f"one client's work t (fit + evaluate, in-process): {t * 1e3:.1f} ms",
        f"one-process round (fastest run): {m['fastest_loop'] / (args.rounds - 1):.3f} s",
        f"server's own work per round s (derived: that round - n (t + 2 c_1)): {s * 1e3:.1f} ms",
        f"two-worker round: model {round_seconds(s, costs[2], t, n, 2):.3f} s, measured "
        f"(median) {two['loop'] / (args.rounds - 1):.3f} s",
        f"  of which both workers held a task {two['held_2'] * 1e3:.1f} ms, one "
        f"{two['held_1'] * 1e3:.1f} ms, none {two['held_0'] * 1e3:.1f} ms",
        "",
        "model: speed-up = (s + n (t + 2 c_1)) / (s + 2 n c_W + ceil(n / W) t), c_W = the",
        "per-message cost with W workers (c_2 for every W > 1)",
        "clients/round " + "".join(f"   W={w:<4d}" for w in CORES),
        *(
            f"{k:13d} " + "".join(f"  {predict(s, costs, t, k, w):6.2f}x" for w in CORES)
            for k in (20, 100, 1000)
        ),
    ]
    return lines


def main() -> None:
    args = parse()
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise SystemExit(f"--tasks must name tasks of {list(TASKS)}, got {unknown}")
    machine = f"{os.cpu_count()}-core {platform.machine()}, shared with other jobs"
    work = (
        f"{args.clients} clients x {args.rounds} rounds (loop: rounds 2-{args.rounds}), "
        f"median of {args.repeats} interleaved runs"
    )
    results, sections = {}, []
    for task in tasks:
        measured = measure(args, task)
        lines = report(args, measured)
        results[task] = {**measured, "lines": lines}
        sections.append(f"## {task}\n\n```\n" + "\n".join(lines) + "\n```\n")
        print(f"\n{task}: {work}\n\n" + "\n".join(lines), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "parallel.json").write_text(
        json.dumps({"machine": machine, "work": work, "tasks": results}, indent=1) + "\n"
    )
    command = (
        f"python bench/parallel.py --tasks {','.join(tasks)} --clients {args.clients} "
        f"--rounds {args.rounds} --repeats {args.repeats}"
    )
    (RESULTS / "parallel.md").write_text(
        f"Machine: {machine}. {work}. Command: `{command}`\n\n"
        + "\n".join(sections)
        + "\n"
        + EXPLANATION
    )


if __name__ == "__main__":
    main()
