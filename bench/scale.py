"""Seconds per round, clients trained per second and peak memory from 10 to 100,000 clients.

Every run trains the same work per round, whatever the size of the federation: ``--sample``
clients (100 by default, all of them when there are fewer) drawn from ``num_clients`` generated
hospitals (``experiment=scale``: ``dataset=population``, 40 training records per client, the
default MLP, one local epoch), for ``--rounds`` rounds; centralized evaluation after every
round, no federated evaluation. Each run is its own child process so its peak memory is its
own: the parent samples the resident memory of the child and all its descendants (Ray's
workers and daemons included) with psutil every 0.2 s and keeps the peak.

(a) fedflower's in-process engine (``simulation=local``): a node's context and data exist only
    while it trains.
(b) the same ServerApp and ClientApp on Flower's ``run_simulation`` (Ray, ``simulation=ray``,
    two workers), as far as it gets within ``--ray-timeout`` seconds per run.

Seconds per round leave out the first round (Keras traces its train function there, Ray starts
its workers); clients per second = sampled clients / seconds per round. The machine is shared,
so wall time depends on what else runs: each round's CPU seconds (user + system, the child and
all its descendants, read with psutil at the end of every round through a recorder sink) are
reported too, and clients per CPU second is the load-independent figure.

Usage::

    nice python bench/scale.py                                  # 10 ... 100,000 clients
    nice python bench/scale.py --clients 10 1000 --rounds 3 --engines local
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).parent / "results"
MARK, ROUND = "SCALE-RESULT ", "SCALE-ROUND "


def overrides(clients: int, sample: int, rounds: int, backend: str) -> list[str]:
    """The config of one run: ``sample`` clients a round among ``clients``."""
    return [
        "experiment=scale",
        f"num_clients={clients}",
        f"num_rounds={rounds}",
        f"simulation={backend}",
        "strategy.fraction_train=1e-9",  # then min_train_nodes clients train every round
        f"strategy.min_train_nodes={min(sample, clients)}",
        "progress=false",
        "output.plots=false",
        "tracking.tensorboard=false",
    ]


def tree_cpu(proc: psutil.Process | None = None) -> float:
    """CPU seconds (user + system) used so far by ``proc`` (this process) and its descendants."""
    proc = proc or psutil.Process()
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class CpuClock:
    """A recorder sink noting the process tree's CPU seconds at the end of every round.

    CPU time, unlike wall time, does not grow when other jobs share the cores.
    """

    def __init__(self) -> None:
        self.marks: list[float] = []

    def log_round(self, row: Any) -> None:  # noqa: D102
        self.marks.append(tree_cpu())
        done = {"round": row["round"], "seconds": row["seconds"], "cpu": self.marks[-1]}
        print(ROUND + json.dumps(done), file=sys.__stdout__, flush=True)  # progress if stopped

    def close(self, results: Any) -> None:  # noqa: D102
        pass


def child(args: list[str]) -> None:
    """Run one configuration in this process and print its measurements as one JSON line."""
    import io
    from contextlib import redirect_stdout

    from hydra import compose, initialize_config_module

    from fedflower.backend import quiet_tensorflow_import
    from fedflower.startup import set_environment_defaults

    set_environment_defaults()
    quiet_tensorflow_import()
    from fedflower import experiment

    with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=args)
    clock = CpuClock()
    build_sinks = experiment.build_sinks
    experiment.build_sinks = lambda *a: [*build_sinks(*a), clock]  # type: ignore[assignment]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out, redirect_stdout(io.StringIO()):
        results = experiment.run(cfg, output_dir=out)
        lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
    record = {
        "wall": time.perf_counter() - t0,
        "round_seconds": [r["seconds"] for r in rows],
        "round_cpu": [b - a for a, b in pairwise(clock.marks)],
        "accuracy": results["final"]["accuracy"],
    }
    print(MARK + json.dumps(record), flush=True)


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory of ``proc`` and all its descendants, in bytes."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def measure(args: list[str], timeout: float, max_rss_gib: float) -> dict[str, Any]:
    """Run ``args`` in a child process; its record plus peak tree RSS, or why it stopped."""
    cmd = [sys.executable, __file__, "--child", *args]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        # files, not pipes: a child that logs more than a pipe holds must not block
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, text=True)
        ps, peak, limit = psutil.Process(proc.pid), 0, max_rss_gib * 2**30
        while proc.poll() is None and time.perf_counter() - t0 < timeout and peak < limit:
            peak = max(peak, tree_rss(ps))
            time.sleep(0.2)
        stopped = proc.poll() is None
        if stopped:
            for p in [*ps.children(recursive=True), ps]:
                p.kill()
            proc.wait()
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if stopped:
        why = f"{timeout:.0f} s" if peak < limit else f"{max_rss_gib:g} GiB"
        done = [json.loads(x[len(ROUND) :]) for x in out.splitlines() if x.startswith(ROUND)]
        return {
            "status": f"stopped at {why} after {len(done)} of the rounds",
            "round_seconds": [d["seconds"] for d in done],
            "round_cpu": [b["cpu"] - a["cpu"] for a, b in pairwise(done)],
            "peak_rss_mib": peak / 2**20,
        }
    lines = [line for line in out.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        return {"status": f"failed: {tail[:120]}", "peak_rss_mib": peak / 2**20}
    record = json.loads(lines[-1][len(MARK) :])
    record.update(status="ok", peak_rss_mib=peak / 2**20)
    return record


def row(engine: str, clients: int, sample: int, rounds: int, rec: dict[str, Any]) -> dict[str, Any]:
    """One line of the results table."""
    steady = rec.get("round_seconds", [])[1:] or rec.get("round_seconds", [])
    per_round = sum(steady) / len(steady) if steady else float("nan")
    k = min(sample, clients)
    cpu = rec.get("round_cpu", [])
    per_round_cpu = sum(cpu) / len(cpu) if cpu else float("nan")
    return {
        "engine": engine,
        "clients": clients,
        "sampled_per_round": k,
        "rounds": rounds,
        "status": rec["status"],
        "seconds_per_round": round(per_round, 3),
        "clients_per_second": round(k / per_round, 1) if steady else float("nan"),
        "cpu_seconds_per_round": round(per_round_cpu, 3),
        "clients_per_cpu_second": round(k / per_round_cpu, 1) if cpu else float("nan"),
        "first_round_seconds": round(rec["round_seconds"][0], 2) if steady else float("nan"),
        "wall_seconds": round(rec.get("wall", float("nan")), 1),
        "peak_rss_mib": round(rec["peak_rss_mib"], 0),
        "final_accuracy": rec.get("accuracy"),
    }


def write(rows: list[dict[str, Any]], meta: dict[str, Any], name: str) -> None:
    """``bench/results/<name>.{csv,json,md}``."""
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / f"{name}.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        f"Machine: {meta['machine']}. {meta['work']}",
        "",
        "| engine | clients | sampled / round | s / round | clients / s | CPU s / round "
        "| clients / CPU s | peak RSS (MiB) | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['clients']:,} | {r['sampled_per_round']} "
            f"| {r['seconds_per_round']} | {r['clients_per_second']} "
            f"| {r['cpu_seconds_per_round']} | {r['clients_per_cpu_second']} "
            f"| {r['peak_rss_mib']:.0f} | {r['status']} |"
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 1000, 10000, 100000])
    parser.add_argument("--sample", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--ray-timeout", type=float, default=300.0)
    parser.add_argument("--max-rss-gib", type=float, default=8.0, help="stop a run above this")
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--name", default="scale", help="results file name under bench/results")
    args = parser.parse_args()
    rows = []
    for engine in args.engines:
        for n in args.clients:
            timeout = args.timeout if engine == "local" else args.ray_timeout
            rec = measure(overrides(n, args.sample, args.rounds, engine), timeout, args.max_rss_gib)
            rows.append(row(engine, n, args.sample, args.rounds, rec))
            print(json.dumps(rows[-1]), flush=True)
            if engine == "ray" and rec["status"] != "ok":
                break  # larger federations will not get further
    meta = {
        "machine": f"{os.cpu_count()}-core {platform.machine()}, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, shared with other jobs",
        "work": f"{args.sample} clients x 1 epoch x 40 records per round, {args.rounds} rounds; "
        "seconds per round leave out the first.",
        "command": "python bench/scale.py " + " ".join(sys.argv[1:]),
    }
    write(rows, meta, args.name)
    for r in rows:
        print(
            f"{r['engine']:>5} {r['clients']:>7} clients: {r['seconds_per_round']:>7} s/round "
            f"{r['clients_per_second']:>7} clients/s "
            f"{r['clients_per_cpu_second']:>7} clients/CPU s "
            f"peak {r['peak_rss_mib']:>6.0f} MiB "
            f"{r['status']}"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
