"""A SuperNode's install without TensorFlow: size, start-up time, and a federation it trains in.

For each client extra (``client-jax``, and ``client`` for TensorFlow side by side) the script
makes a fresh virtual environment with ``uv venv``, installs this checkout with
``uv pip install '.[<extra>]'`` and measures, in that one run on this machine:

* install seconds (with this machine's uv package cache) and the environment's
  size on disk, and whether TensorFlow is importable there;
* start-up: seconds to import the SuperNode's ClientApp module (``fedflower.deploy.app``,
  what Flower's ``flwr-clientapp`` process loads; best of three fresh interpreters) and to
  train one round on a site file of 1,000 rows through it.

Then a federation: a SuperLink (TLS, SuperNode authentication) and the ServerApp from the
environment running this script, and two SuperNodes whose ``flower-supernode`` and
``flwr-clientapp`` processes come from the ``client-jax`` environment (no TensorFlow), for
``--rounds`` rounds of the default experiment. Results go to
``bench/results/client_install.{json,md}``.

Usage::

    python bench/client_install.py                      # client-jax and client, federation
    python bench/client_install.py --extras client-jax --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BACKEND = {"client-jax": "jax", "client-torch": "torch", "client": "tensorflow"}
TRAIN_ONE_ROUND = """
import sys, time
t0 = time.perf_counter()
import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
from fedflower.deploy.app import client_app
from fedflower.deploy.local_data import write_csv
imported = time.perf_counter() - t0
rng = np.random.default_rng(0)
x = rng.normal(size=(1000, 4)).astype("float32")
path = write_csv(sys.argv[1], x, (x[:, 0] > 0).astype(int))
names = ["hidden_0/kernel", "hidden_0/bias", "output/kernel", "output/bias"]
shapes = [(4, 128), (128,), (128, 1), (1,)]
arrays = {n: Array(np.zeros(s, "float32")) for n, s in zip(names, shapes)}
config = ConfigRecord({"batch-size": 32, "local-epochs": 1})
msg = Message(RecordDict({"arrays": ArrayRecord(arrays), "config": config}),
              dst_node_id=5, message_type="train")
ctx = Context(run_id=1, node_id=5, node_config={"data-path": path}, state=RecordDict(),
              run_config={"overrides": ""})
t1 = time.perf_counter()
reply = client_app(msg, ctx)
assert not reply.has_error(), reply.error
import keras
print(imported, time.perf_counter() - t1, keras.backend.backend(),
      "tensorflow" in sys.modules)
"""


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line (parsed before anything heavy is imported, so --help is instant)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", nargs="+", default=["client-jax", "client"], choices=BACKEND)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the federation (0: none)")
    parser.add_argument("--keep", action="store_true", help="keep the environments")
    return parser.parse_args(argv)


def install(extra: str, where: Path) -> dict[str, Any]:
    """A fresh environment with ``.[extra]``: install seconds, size, TensorFlow or not."""
    venv = where / extra
    subprocess.run(["uv", "venv", "-q", "--python", "3.11", str(venv)], check=True)
    python = venv / "bin" / "python"
    t0 = time.perf_counter()
    subprocess.run(
        ["uv", "pip", "install", "-q", "--python", str(python), f".[{extra}]"],
        cwd=ROOT,
        check=True,
    )
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    probe = "import importlib.util as u; print(u.find_spec('tensorflow') is not None)"
    has_tf = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    return {
        "extra": extra,
        "python": str(python),
        "install_seconds": round(seconds, 1),
        "size_mb": round(size / 2**20),
        "tensorflow_installed": has_tf.stdout.strip() == "True",
    }


def start_up(row: dict[str, Any], where: Path) -> None:
    """Import and one-round training seconds of the ClientApp in the row's environment."""
    env = {**os.environ, "KERAS_BACKEND": BACKEND[row["extra"]], "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = []
    for i in range(3):
        site = where / f"site-{row['extra']}-{i}.csv"
        done = subprocess.run(
            [row["python"], "-c", TRAIN_ONE_ROUND, str(site)],
            capture_output=True,
            text=True,
            env=env,
            cwd=where,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"{row['extra']}: {done.stderr[-2000:]}")
        imported, trained, backend, tf_loaded = done.stdout.split()[-4:]
        runs.append((float(imported), float(trained)))
        row["backend"], row["tensorflow_imported"] = backend, tf_loaded == "True"
    row["import_seconds"] = round(min(r[0] for r in runs), 2)
    row["train_round_seconds"] = round(min(r[1] for r in runs), 2)


def federation(client_python: str, rounds: int, where: Path) -> dict[str, Any]:
    """Two SuperNodes from the TensorFlow-free environment in a secure local federation."""
    from fedflower.deploy.demo import node_configs, with_nodes
    from fedflower.deploy.federation import LocalFederation

    bin_dir = Path(client_python).parent

    class ClientEnvFederation(LocalFederation):
        """SuperNodes (and the ClientApp processes they start) from the client environment."""

        def _spawn(
            self, name: str, args: list[str], home: Path, env: dict[str, str] | None = None
        ) -> Any:
            if name.startswith("supernode"):
                args = [str(bin_dir / "flower-supernode"), *args[1:]]
                path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
                env = {**(env or {}), "PATH": path}
            return super()._spawn(name, args, home, env)

    overrides = with_nodes([f"num_rounds={rounds}"], 2)
    root = where / "federation"
    configs = node_configs(overrides, 2, root, "csv")
    t0 = time.perf_counter()
    with ClientEnvFederation(root, configs, secure=True, backends=["jax"]) as fed:
        online = time.perf_counter() - t0
        results, _ = fed.run(overrides, output_dir=root / "run", timeout=1800.0)
        logs = [(fed.logs / f"supernode-{i}.log").read_text() for i in (1, 2)]
    return {
        "nodes_online_seconds": round(online, 1),
        "rounds": results["totals"]["rounds"],
        "final_accuracy": round(results["final"]["accuracy"], 4),
        "node_errors": sum(log.count("Traceback") for log in logs),
    }


def table(rows: list[dict[str, Any]], fed: dict[str, Any] | None, command: str) -> str:
    """The markdown page of the results."""
    lines = [
        "# A SuperNode's install per Keras backend",
        "",
        f"`{command}` (fresh `uv venv` per extra, with this machine's uv package cache; one run). "
        "Import: `fedflower.deploy.app`, the module "
        "Flower's ClientApp process loads; train: one round of 1,000 rows through it (best of "
        "three fresh processes).",
        "",
        "| extra | backend | TensorFlow installed | size on disk | install | import | "
        "train one round |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| `fedflower[{r['extra']}]` | {r['backend']} | "
            f"{'yes' if r['tensorflow_installed'] else 'no'} | {r['size_mb']} MB | "
            f"{r['install_seconds']} s | {r['import_seconds']} s | {r['train_round_seconds']} s |"
        )
    if fed:
        lines += [
            "",
            f"Federation: a SuperLink and the ServerApp (TensorFlow) with TLS and SuperNode "
            f"authentication, two SuperNodes from the `client-jax` environment: online after "
            f"{fed['nodes_online_seconds']} s, {fed['rounds']} rounds, final accuracy "
            f"{fed['final_accuracy']:.4f}, {fed['node_errors']} errors in the SuperNodes' logs.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Measure, print and write the results."""
    args = parse(argv)
    command = "python bench/client_install.py " + " ".join(argv)
    where = Path(tempfile.mkdtemp(prefix="fedflower-client-install-"))
    try:
        rows = []
        for extra in args.extras:
            row = install(extra, where)
            start_up(row, where)
            rows.append(row)
            print(json.dumps(row))
        jax_row = next((r for r in rows if r["extra"] == "client-jax"), None)
        fed = federation(jax_row["python"], args.rounds, where) if jax_row and args.rounds else None
        page = table(rows, fed, command.strip())
        print(page)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "client_install.md").write_text(page)
        kept = [{k: v for k, v in r.items() if k != "python"} for r in rows]  # no machine paths
        payload = {
            "command": command.strip(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()}-core {platform.machine()}, shared with other jobs",
            "installs": kept,
            "federation": fed,
        }
        (RESULTS / "client_install.json").write_text(json.dumps(payload, indent=1) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(where, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
