"""fedflower next to pfl-research and a plain Flower app on identical federated work.

For each task the parent process writes the work once: the clients' training arrays and the
central test set as fedflower partitions them (``data.npz``), and the initial model, compiled
with the task's loss and local optimizer (``model.keras``). Every side trains that model on
those arrays: all clients every round, the task's local epochs, batch size and learning rate,
central evaluation on the test set every round, no federated evaluation. The sides:

* **fedflower**: ``experiment.run`` on the in-process engine (``simulation=local``);
* **fedflower-2threads**: the same with ``simulation.tf_threads=2`` (one TensorFlow thread per
  core here) instead of the default 1;
* **pfl**: ``pfl`` 0.6 (apple/pfl-research, arXiv:2404.06430) with its TensorFlow backend —
  ``TFModel``, ``FederatedAveraging``, ``SimulatedBackend``, a ``CentralEvaluationCallback`` —
  in a virtual environment of its own that this script creates (``pfl`` pins
  ``dp-accounting<0.6``, fedflower's privacy accountant needs a newer one), with TensorFlow's
  default thread pools (one thread per core);
* **pfl-1thread**: the same with TensorFlow limited to one thread, as fedflower's
  ``simulation.tf_threads`` default: the two frameworks on equal threads;
* **Flower**: a Message-API ``ServerApp`` (Flower's ``FedAvg.start`` with a central
  ``evaluate_fn``) and ``ClientApp`` (``model.fit`` per message), as Flower's examples write
  them, run with ``flwr.simulation.run_simulation``.

Each side runs in a fresh process; the runs are interleaved and each number is the median
of ``--repeats``: loop seconds (the rounds, after start-up), process seconds (the whole
process, as the parent times it) and final test accuracy. Results: ``bench/results/peers.md``
and ``.json`` (``--output`` names another file: a run of some sides leaves the others' file
as it is). Not part of CI.

Usage::

    python bench/peers.py                                # every task, median of 3
    python bench/peers.py --tasks hospitals --repeats 1
    python bench/peers.py --sides fedflower,flower --output peers_flower   # Flower on Ray
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
PFL = "pfl[tf]==0.6.0"
TASKS = {
    "hospitals": [],
    "digits": ["experiment=digits"],
    "text": ["experiment=financial_news"],
}
"""The tasks: fedflower's default experiment, the digits CNN and the text task."""
SIDES = ("fedflower", "fedflower-2threads", "pfl", "pfl-1thread", "flower")
COMMON = [
    "strategy.fraction_evaluate=0.0",  # no federated evaluation
    "progress=false",
    "output.plots=false",
    "output.save_model=false",
    "checkpoint.every=0",
    "latency=none",
]


def parse() -> argparse.Namespace:
    """The command line, parsed before TensorFlow is imported: ``--help`` is instant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs; median kept")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated sides")
    parser.add_argument(
        "--venv",
        type=Path,
        default=Path.home() / ".cache" / "fedflower" / "pfl-venv",
        help="pfl's virtual environment (created if missing)",
    )
    parser.add_argument(
        "--output",
        default="peers",
        help="results file name in bench/results (default: peers -> peers.md, peers.json)",
    )
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def compose_cfg(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[*overrides, *COMMON])


def write_work(task: str, work: Path) -> None:
    """The task's arrays, initial compiled model and settings, as every side reads them."""
    import numpy as np

    from fedflower.components import model_factory
    from fedflower.determinism import seed_everything
    from fedflower.experiment import load_federation

    cfg = compose_cfg(TASKS[task])
    source, fed = load_federation(cfg)
    seed_everything(cfg.seed)
    model = model_factory(cfg, source.input_shape, source.num_classes)()
    model.optimizer.learning_rate = float(cfg.client.learning_rate)
    model.save(work / "model.keras")
    arrays: dict[str, Any] = {"x_test": source.x_test, "y_test": source.y_test}
    for i in range(cfg.num_clients):
        data = fed.client(i)
        arrays[f"x{i}"], arrays[f"y{i}"] = data.x_train, data.y_train
    np.savez(work / "data.npz", **arrays)
    write_token_work(model, arrays, work)
    settings = {
        "overrides": TASKS[task],
        "clients": cfg.num_clients,
        "rounds": cfg.num_rounds,
        "epochs": cfg.client.local_epochs,
        "batch": cfg.client.batch_size,
        "lr": cfg.client.learning_rate,
    }
    (work / "work.json").write_text(json.dumps(settings))


def write_token_work(model: Any, arrays: dict[str, Any], work: Path) -> None:
    """For a text model: the arrays as token ids and the model after its ``TextVectorization``.

    pfl's ``TFModel`` hands a batch's raw inputs to Keras as NumPy arrays, and Keras takes no
    string arrays; so pfl gets every sentence mapped to token ids once, by the model's own
    vectorization layer, and the rest of the same model (same initial weights, loss and
    optimizer). fedflower keeps vectorizing inside its model, in every step: its work is the
    same plus the vectorization.
    """
    import keras
    import numpy as np

    names = [layer.name for layer in model.layers]
    if "vectorize" not in names:
        return
    vectorize = model.get_layer("vectorize")
    tokens = {k: np.asarray(vectorize(v)) if k.startswith("x") else v for k, v in arrays.items()}
    inputs = keras.Input(shape=tokens["x_test"].shape[1:], dtype="int64", name="tokens")
    x = inputs
    for layer in model.layers[names.index("vectorize") + 1 :]:
        x = layer(x)
    rest = keras.Model(inputs, x, name="after_vectorize")
    rest.compile(
        optimizer=model.optimizer.__class__.from_config(model.optimizer.get_config()),
        loss=model.loss,
        metrics=["accuracy"],
    )
    rest.save(work / "model_tokens.keras")
    np.savez(work / "data_tokens.npz", **tokens)


def load_work(work: Path, tokens: bool = False) -> tuple[dict[str, Any], Any, Any]:
    """Settings, arrays and the initial compiled model of a task (``tokens``: as token ids)."""
    import keras
    import numpy as np

    settings = json.loads((work / "work.json").read_text())
    suffix = "_tokens" if tokens and (work / "model_tokens.keras").exists() else ""
    with np.load(work / f"data{suffix}.npz") as data:
        arrays = dict(data)
    return settings, arrays, keras.models.load_model(work / f"model{suffix}.keras")


def side_fedflower(work: Path, overrides: tuple[str, ...] = ()) -> dict[str, float]:
    """Fedflower's experiment on the same partition (it partitions the data the same way)."""
    from fedflower import experiment

    settings = json.loads((work / "work.json").read_text())
    cpu: list[float] = []
    simulate = experiment.simulate

    def timed(*args: Any, **kwargs: Any) -> None:  # the engine's run: CPU seconds of the loop
        c0 = time.process_time()
        simulate(*args, **kwargs)
        cpu.append(time.process_time() - c0)

    experiment.simulate = timed
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_cfg([*settings["overrides"], *overrides])
        results = experiment.run(cfg, output_dir=out)
    return {
        "loop": results["totals"]["seconds"],
        "cpu": cpu[0],
        "accuracy": results["final"]["accuracy"],
    }


def accuracy_metric(model: Any) -> Any:
    import keras

    if int(model.output_shape[-1]) == 1:
        return keras.metrics.BinaryAccuracy()
    return keras.metrics.SparseCategoricalAccuracy()


def side_pfl(work: Path, threads: int = 0) -> dict[str, float]:
    """Pfl's FedAvg with its TensorFlow backend (run in pfl's own environment).

    ``threads``: TensorFlow's intra- and inter-op threads (0: TensorFlow's default).
    """
    import tensorflow as tf

    if threads:  # before TensorFlow runs its first op
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.central_evaluation import CentralEvaluationCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.model.tensorflow import TFModel

    settings, arrays, keras_model = load_work(work, tokens=True)
    users = list(range(settings["clients"]))
    train = FederatedDataset(
        lambda u: Dataset((arrays[f"x{u}"], arrays[f"y{u}"]), user_id=str(u)),
        get_user_sampler("minimize_reuse", users),
    )
    central = Dataset((arrays["x_test"], arrays["y_test"]))
    metric = accuracy_metric(keras_model)
    model = TFModel(keras_model, {"accuracy": metric}, tf.keras.optimizers.SGD(1.0))
    params = NNAlgorithmParams(
        central_num_iterations=settings["rounds"],
        evaluation_frequency=1,
        train_cohort_size=settings["clients"],
        val_cohort_size=0,
    )
    train_params = NNTrainHyperParams(
        local_learning_rate=settings["lr"],
        local_num_epochs=settings["epochs"],
        local_batch_size=settings["batch"],
    )
    eval_params = NNEvalHyperParams(local_batch_size=1024)
    t0, c0 = time.perf_counter(), time.process_time()
    FederatedAveraging().run(
        algorithm_params=params,
        backend=SimulatedBackend(training_data=train, val_data=train),
        model=model,
        model_train_params=train_params,
        model_eval_params=eval_params,
        callbacks=[CentralEvaluationCallback(central, eval_params, frequency=1)],
    )
    loop, cpu = time.perf_counter() - t0, time.process_time() - c0
    keras_model.compile(loss=keras_model.loss, metrics=[accuracy_metric(keras_model)])
    accuracy = keras_model.evaluate(arrays["x_test"], arrays["y_test"], 1024, verbose=0)[1]
    return {"loop": loop, "cpu": cpu, "accuracy": float(accuracy)}


def keras_data(x: Any, y: Any, batch: int, shuffle: bool) -> tuple[Any, ...]:
    """``fit``/``evaluate``'s data arguments as a Keras user passes them.

    NumPy arrays, or a ``tf.data.Dataset`` for string inputs (Keras converts no NumPy string
    array).
    """
    if x.dtype.kind not in "USO":
        return (x, y, batch)
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y))
    data = data.shuffle(len(y)) if shuffle else data  # as fit shuffles arrays
    return (data.batch(batch),)


def flower_apps(work: Path, timing: dict[str, float]) -> tuple[Any, Any]:
    """A ServerApp and ClientApp as Flower's Message-API examples write them."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    settings, arrays, model = load_work(work)
    client_app, server_app = ClientApp(), ServerApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        # as Flower's examples do: the model and the partition are loaded for each message
        local_settings, local_arrays, local_model = load_work(work)
        pid = int(context.node_config["partition-id"])
        local_model.set_weights(msg.content["arrays"].to_numpy_ndarrays())
        x, y = local_arrays[f"x{pid}"], local_arrays[f"y{pid}"]
        batch, epochs = local_settings["batch"], local_settings["epochs"]
        local_model.fit(*keras_data(x, y, batch, shuffle=True), epochs=epochs, verbose=0)
        content = RecordDict(
            {
                "arrays": ArrayRecord(local_model.get_weights()),
                "metrics": MetricRecord({"num-examples": len(y)}),
            }
        )
        return Message(content=content, reply_to=msg)

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        def central(server_round: int, record: ArrayRecord) -> MetricRecord:
            model.set_weights(record.to_numpy_ndarrays())
            test = keras_data(arrays["x_test"], arrays["y_test"], 1024, shuffle=False)
            loss, acc = model.evaluate(*test, verbose=0)
            timing["accuracy"] = float(acc)
            return MetricRecord({"loss": float(loss), "accuracy": float(acc)})

        t0, c0 = time.perf_counter(), time.process_time()
        FedAvg(fraction_evaluate=0.0).start(
            grid=grid,
            initial_arrays=ArrayRecord(model.get_weights()),
            train_config=ConfigRecord({}),
            num_rounds=settings["rounds"],
            evaluate_fn=central,
        )
        timing["loop"] = time.perf_counter() - t0
        timing["cpu"] = time.process_time() - c0  # the server process only (Ray's actors not)

    return server_app, client_app


def side_flower(work: Path) -> dict[str, float]:
    """The plain Flower app on Flower's simulation engine (``run_simulation``, Ray)."""
    from flwr.simulation import run_simulation

    timing: dict[str, float] = {}
    server_app, client_app = flower_apps(work, timing)
    clients = json.loads((work / "work.json").read_text())["clients"]
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": os.cpu_count(), "include_dashboard": False},
        },
    )
    return timing


def ensure_venv(venv: Path) -> Path:
    """Pfl's virtual environment with the TensorFlow this process runs; its Python."""
    import tensorflow as tf

    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pins = [PFL, f"tensorflow=={tf.__version__}"]
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
    return python


def run_child(python: Path, side: str, work: Path) -> dict[str, float]:
    """One side in a fresh process: its JSON answer plus the process's wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(python), __file__, "--side", side, "--work", str(work)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{side} failed:\n{proc.stderr[-3000:]}")
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**answer, "process": time.perf_counter() - t0}


def table(task: str, med: dict[str, dict[str, float]], load: tuple[float, float]) -> list[str]:
    ref = med["fedflower"]
    lines = [
        f"{task}:",
        f"  {'side':<18} {'loop s':>7}  {'x fedflower':>10}  {'loop CPU s':>10}  "
        f"{'x fedflower':>10}  {'process s':>9}  {'final acc':>9}",
    ]
    for side, m in med.items():
        lines.append(
            f"  {side:<18} {m['loop']:7.2f}  {m['loop'] / ref['loop']:10.2f}"
            f"  {m['cpu']:10.2f}  {m['cpu'] / ref['cpu']:10.2f}  {m['process']:9.2f}"
            f"  {m['accuracy']:9.4f}"
        )
    for side in ("fedflower-2threads", "pfl", "pfl-1thread", "flower"):
        if side in med:
            lines.append(
                f"  fedflower / {side}: loop time {ref['loop'] / med[side]['loop']:.2f},"
                f" loop CPU time {ref['cpu'] / med[side]['cpu']:.2f}"
            )
    lines.append(f"  load average (1 min) before / after: {load[0]:.1f} / {load[1]:.1f}")
    return lines


def main() -> None:
    args = parse()
    if args.side:  # a child: one run of one side
        answer = {
            "fedflower": side_fedflower,
            "fedflower-2threads": lambda work: side_fedflower(work, ("simulation.tf_threads=2",)),
            "pfl": side_pfl,
            "pfl-1thread": lambda work: side_pfl(work, threads=1),
            "flower": side_flower,
        }[args.side]
        print(json.dumps(answer(args.work)))
        return
    sides = tuple(s for s in SIDES if s in args.sides.split(","))
    pythons = {s: Path(sys.executable) for s in sides}
    for side in ("pfl", "pfl-1thread"):
        if side in sides:
            pythons[side] = ensure_venv(args.venv)
    lines: list[str] = []
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            work = Path(tmp) / task
            work.mkdir()
            write_work(task, work)
            before = os.getloadavg()[0]
            try:
                runs = run_task(task, work, pythons, args.repeats)
            except RuntimeError as exc:  # one side failing leaves the other tasks' numbers
                lines += [f"{task}: {str(exc).splitlines()[0]} {str(exc).splitlines()[-1]}", ""]
                write_results(args, lines, raw)
                continue
            med = {
                s: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for s, rs in runs.items()
            }
            load = (before, os.getloadavg()[0])
            raw[task] = {"runs": runs, "load_average": load}
            lines += [*table(task, med, load), ""]
            write_results(args, lines, raw)


def run_task(
    task: str, work: Path, pythons: dict[str, Path], repeats: int
) -> dict[str, list[dict[str, float]]]:
    """Every side ``repeats`` times, interleaved (the order reversed every other repeat)."""
    sides = tuple(pythons)
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    for repeat in range(repeats):
        for side in sides if repeat % 2 == 0 else sides[::-1]:
            runs[side].append(run_child(pythons[side], side, work))
            print(task, side, runs[side][-1], flush=True)
    return runs


def write_results(args: argparse.Namespace, lines: list[str], raw: dict[str, Any]) -> None:
    head = f"median of {args.repeats} interleaved runs per side"
    machine = f"{os.cpu_count()}-core {platform.machine()}, shared with other jobs"
    command = (
        f"python bench/peers.py --tasks {args.tasks} --sides {args.sides} --repeats {args.repeats}"
    )
    if args.output != "peers":
        command += f" --output {args.output}"
    print("\n".join(lines), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.output}.json").write_text(
        json.dumps({"machine": machine, "command": command, "tasks": raw}, indent=1)
    )
    (RESULTS / f"{args.output}.md").write_text(
        f"Machine: {machine}; {head}. Command: `{command}`\n\n```\n"
        + "\n".join(lines)
        + "```\n"
        + NOTES
    )


NOTES = """
Every side trains the same initial model on the same client arrays and evaluates on the same
test set (see the script's docstring). On the text task pfl gets the sentences as token ids,
mapped once by the model's own `TextVectorization`, and the model after that layer (pfl's
`TFModel` passes raw batches to Keras, which takes no string arrays); fedflower and Flower
vectorize inside the model in every step, so their work is pfl's plus the vectorization.
Loop seconds: the rounds, after start-up (wall clock); loop CPU seconds: the CPU time of the
side's process over its round loop (all its threads; fedflower: the engine's run, which also
builds the server's model; Flower: the server process only) — on a shared machine the wall
clock also counts the time other jobs hold the cores, the CPU time much less so; process
seconds: the whole process as the parent times it (imports, data loading, compilation). A
side missing from a table was not run (`--sides`). Threads: fedflower runs TensorFlow with one
intra-op and one inter-op thread (`simulation.tf_threads`, default 1), pfl with TensorFlow's
default pools (one thread per core), pfl-1thread with one of each, as fedflower;
fedflower-2threads with two of each (`simulation.tf_threads=2`).
"""


if __name__ == "__main__":
    main()
