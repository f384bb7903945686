"""What fedflower costs on top of a bare Keras loop doing the same federated work.

Both sides, in one process and one run, do N clients x E local epochs x R rounds on the default
hospitals data with the same model, optimizer, batch size and data split: per round every client
sets the global weights, resets its optimizer, trains, returns its weights; the server averages
them (weighted by examples); every client evaluates the new global model on its validation split;
the server evaluates it on the central test set (and, before round 1, the initial model).

(a) fedflower: ``experiment.run(cfg)`` through the ServerApp/ClientApp, Flower strategy and
    the in-process engine (``simulation=local``), every message serialized to Flower's wire
    objects and metered.
(b) bare: a plain Python loop over the same Keras model, training with ``Model.fit`` on a
    seeded ``tf.data`` pipeline;
(c) compiled step: the same loop written as the fastest simulators write it (pfl-research):
    Keras' own ``train_step``/``test_step`` wrapped once in a ``tf.function`` and called on
    every batch (a NumPy permutation per client and round), no ``fit``/``evaluate``.

With ``--ray``, two more sides on Flower's Ray simulation engine, side by side:

(d) plain Flower: ``flwr.simulation.run_simulation`` with a minimal ServerApp (Flower's own
    ``FedAvg.start`` with a central ``evaluate_fn``) and ClientApp (the same Keras model and
    ``tf.data`` pipeline) and the same Ray backend config;
(e) fedflower on the same engine (``simulation=ray``).

Wall time is the goal's measure; the CPU time of this process (all its threads; Ray workers
not included) is printed next to it for the local sides, since it varies less on a shared
machine. Results go to ``bench/results/overhead.{json,md}`` (``overhead_ray.*`` with ``--ray``).

Usage::

    python bench/overhead.py --rounds 10           # the default experiment: 10 x 1 x 10
    python bench/overhead.py --clients 10 --rounds 5 --ray
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TQDM_DISABLE", "1")


def parse() -> argparse.Namespace:
    """The command line, parsed before TensorFlow is imported: ``--help`` is instant."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs; best is kept")
    parser.add_argument(
        "--ray", action="store_true", help="plain Flower run_simulation vs fedflower, both on Ray"
    )
    return parser.parse_args()


ARGS = parse() if __name__ == "__main__" else None

from fedflower.backend import quiet_tensorflow_import

quiet_tensorflow_import()

import keras
import numpy as np
import tensorflow as tf
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from fedflower.aggregation import weighted_mean
from fedflower.client.keras_client import reset_optimizer
from fedflower.components import configure_threads
from fedflower.engine import clock, metered
from fedflower.engine import local as local_engine
from fedflower.engine import pool as pool_engine
from fedflower.experiment import load_data, run
from fedflower.models import compile_model

RESULTS = Path(__file__).resolve().parent / "results"
MACHINE = f"{os.cpu_count()}-core {platform.machine()}, shared with other jobs"


def make_cfg(clients: int, rounds: int, epochs: int, backend: str) -> Any:
    overrides = [
        f"num_clients={clients}",
        f"num_rounds={rounds}",
        f"client.local_epochs={epochs}",
        f"simulation={backend}",
        "progress=false",
        "output.plots=false",
        "output.save_model=false",
    ]
    with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@contextmanager
def timed(module: Any, name: str, totals: dict[str, float], key: str | None = None) -> Any:
    """Add the time spent in ``module.name`` to ``totals[key or name]`` while the block runs."""
    original: Callable[..., Any] = getattr(module, name)
    key = key or name

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - t0

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def run_fedflower(cfg: Any) -> tuple[float, float, dict[str, float]]:
    """Wall time, final accuracy and a breakdown of one fedflower run (``cpu``: CPU time)."""
    totals: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as out, redirect_stdout(io.StringIO()):
        t0, c0 = time.perf_counter(), time.process_time()
        with (
            timed(local_engine, "transmit", totals),
            # the default engine (workers=auto) runs clients here through the pool's own calls
            timed(pool_engine, "transmit", totals),
            timed(pool_engine, "deflate", totals, key="transmit"),
            timed(pool_engine, "inflate", totals, key="transmit"),
            timed(metered, "crossing_nbytes", totals),
            timed(clock, "crossing_nbytes", totals),
        ):
            results = run(cfg, output_dir=out)
        wall = time.perf_counter() - t0
    totals["cpu"] = time.process_time() - c0
    totals["rounds"] = results["totals"]["seconds"]
    totals["startup"] = wall - totals["rounds"]
    return wall, results["final"]["accuracy"], totals


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, tf_data: bool) -> dict[str, float]:
    if tf_data:
        return model.evaluate(
            tf.data.Dataset.from_tensor_slices((x, y)).batch(1024), verbose=0, return_dict=True
        )
    return model.evaluate(x, y, batch_size=1024, verbose=0, return_dict=True)


def setup(cfg: Any) -> tuple[Any, list[Any], keras.Model]:
    """The seeded data, the clients' data and the compiled model, as fedflower builds them."""
    keras.utils.set_random_seed(cfg.seed)
    source, fed = load_data(cfg)
    clients = [fed.client(c) for c in range(cfg.num_clients)]
    model = instantiate(cfg.model, input_shape=source.input_shape, num_classes=source.num_classes)
    optimizer = instantiate(cfg.client.optimizer, learning_rate=cfg.client.learning_rate)
    return source, clients, compile_model(model, optimizer, source.num_classes)


def run_bare(cfg: Any, tf_data: bool = True) -> dict[str, float]:
    """The same federated work as a plain Keras loop.

    With ``tf_data`` the local data go through the same seeded ``tf.data`` pipeline fedflower's
    client uses; without, ``model.fit`` gets NumPy arrays (what a quick script would do).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    source, clients, model = setup(cfg)
    weights = model.get_weights()
    accuracy = evaluate(model, source.x_test, source.y_test, tf_data)["accuracy"]  # the initial
    for _ in range(cfg.num_rounds):
        updates = []
        for cid, data in enumerate(clients):
            model.set_weights(weights)
            reset_optimizer(model.optimizer, cfg.client.learning_rate)
            if tf_data:
                ds = (
                    tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
                    .shuffle(len(data.y_train), seed=cid, reshuffle_each_iteration=True)
                    .batch(cfg.client.batch_size)
                )
                model.fit(ds, epochs=cfg.client.local_epochs, shuffle=False, verbose=0)
            else:
                model.fit(
                    data.x_train,
                    data.y_train,
                    epochs=cfg.client.local_epochs,
                    batch_size=cfg.client.batch_size,
                    shuffle=True,
                    verbose=0,
                )
            updates.append((model.get_weights(), len(data.y_train)))
        weights = weighted_mean(updates)
        model.set_weights(weights)
        for data in clients:
            evaluate(model, data.x_val, data.y_val, tf_data)
        accuracy = evaluate(model, source.x_test, source.y_test, tf_data)["accuracy"]
    return side(time.perf_counter() - t0, accuracy, time.process_time() - c0)


def compiled_steps(model: keras.Model) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Keras' own train and test steps, each wrapped once in a ``tf.function``."""
    train = tf.function(lambda x, y: model.train_step((x, y)), reduce_retracing=True)
    test = tf.function(lambda x, y: model.test_step((x, y)), reduce_retracing=True)
    return train, test


def run_compiled(cfg: Any) -> dict[str, float]:
    """The same federated work as a loop over one compiled train step (as pfl-research runs)."""
    t0, c0 = time.perf_counter(), time.process_time()
    source, clients, model = setup(cfg)
    train, test = compiled_steps(model)
    size = cfg.client.batch_size

    def evaluate_on(x: np.ndarray, y: np.ndarray) -> float:
        model.reset_metrics()
        for s in range(0, len(y), 1024):
            logs = test(x[s : s + 1024], y[s : s + 1024])
        return float(logs["accuracy"])

    weights = model.get_weights()
    accuracy = evaluate_on(source.x_test, source.y_test)
    for rnd in range(cfg.num_rounds):
        updates = []
        for cid, data in enumerate(clients):
            model.set_weights(weights)
            reset_optimizer(model.optimizer, cfg.client.learning_rate)
            model.reset_metrics()
            rng = np.random.default_rng([cfg.seed, rnd, cid])
            for _ in range(cfg.client.local_epochs):
                order = rng.permutation(len(data.y_train))
                for s in range(0, len(order), size):
                    rows = order[s : s + size]
                    train(data.x_train[rows], data.y_train[rows])
            updates.append((model.get_weights(), len(data.y_train)))
        weights = weighted_mean(updates)
        model.set_weights(weights)
        for data in clients:
            evaluate_on(data.x_val, data.y_val)
        accuracy = evaluate_on(source.x_test, source.y_test)
    return side(time.perf_counter() - t0, accuracy, time.process_time() - c0)


def side(wall: float, accuracy: float, cpu: float | None = None) -> dict[str, float]:
    """One side's measurements."""
    return {"wall": wall, "accuracy": accuracy, **({} if cpu is None else {"cpu": cpu})}


def plain_flower_apps(cfg: Any) -> tuple[Any, Any]:
    """The same federated work as a minimal Flower app: Flower's FedAvg, no fedflower layer.

    What a user writing Flower glue by hand would run: the ClientApp trains and evaluates the
    same Keras model (built once per worker process) on its partition; the ServerApp runs
    ``FedAvg.start`` with the central evaluation as ``evaluate_fn``.
    """
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    source, fed = load_data(cfg)
    clients = [fed.client(c) for c in range(cfg.num_clients)]
    models: list[keras.Model] = []

    def model() -> keras.Model:
        if not models:
            configure_threads(cfg.simulation.tf_threads)
            m = instantiate(
                cfg.model, input_shape=source.input_shape, num_classes=source.num_classes
            )
            opt = instantiate(cfg.client.optimizer, learning_rate=cfg.client.learning_rate)
            models.append(compile_model(m, opt, source.num_classes))
        return models[0]

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        cid = int(context.node_config["partition-id"])
        data, m = clients[cid], model()
        m.set_weights(msg.content["arrays"].to_numpy_ndarrays())  # type: ignore[union-attr]
        reset_optimizer(m.optimizer, cfg.client.learning_rate)
        ds = (
            tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
            .shuffle(len(data.y_train), seed=cid, reshuffle_each_iteration=True)
            .batch(cfg.client.batch_size)
        )
        m.fit(ds, epochs=cfg.client.local_epochs, shuffle=False, verbose=0)
        reply = RecordDict(
            {
                "arrays": ArrayRecord(m.get_weights()),
                "metrics": MetricRecord({"num-examples": len(data.y_train)}),
            }
        )
        return Message(reply, reply_to=msg)

    @client_app.evaluate()
    def evaluate_client(msg: Message, context: Context) -> Message:
        data, m = clients[int(context.node_config["partition-id"])], model()
        m.set_weights(msg.content["arrays"].to_numpy_ndarrays())  # type: ignore[union-attr]
        res = evaluate(m, data.x_val, data.y_val, tf_data=True)
        metrics = MetricRecord({**res, "num-examples": len(data.y_val)})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    server_app = ServerApp()
    accuracy: list[float] = []

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            m = model()
            m.set_weights(arrays.to_numpy_ndarrays())
            res = evaluate(m, source.x_test, source.y_test, tf_data=True)
            accuracy.append(res["accuracy"])
            return MetricRecord(res)

        keras.utils.set_random_seed(cfg.seed)
        FedAvg(min_available_nodes=cfg.num_clients).start(
            grid=grid,
            initial_arrays=ArrayRecord(model().get_weights()),
            num_rounds=cfg.num_rounds,
            evaluate_fn=central,
        )

    server_app.accuracy = accuracy  # type: ignore[attr-defined]
    return server_app, client_app


def run_plain_flower(cfg: Any) -> dict[str, float]:
    """Wall time and final accuracy of the plain Flower app on the Ray engine."""
    import logging

    from flwr.simulation import run_simulation
    from omegaconf import OmegaConf

    logging.getLogger("flwr").setLevel(logging.WARNING)  # as fedflower runs it: no per-round log
    t0 = time.perf_counter()
    server_app, client_app = plain_flower_apps(cfg)
    with redirect_stdout(io.StringIO()):
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=cfg.num_clients,
            backend_config=OmegaConf.to_container(cfg.simulation.backend_config, resolve=True),  # type: ignore[arg-type]
        )
    accuracy = server_app.accuracy[-1] if server_app.accuracy else float("nan")  # type: ignore[attr-defined]
    return side(time.perf_counter() - t0, accuracy)


def local_sides(args: argparse.Namespace) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Bare Keras vs fedflower on the in-process engine, alternating, best of ``repeats``."""
    cfg = make_cfg(args.clients, args.rounds, args.epochs, "local")
    configure_threads(cfg.simulation.tf_threads)
    best: dict[str, dict[str, float]] = {}
    breakdown: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, measure in (("bare", run_bare), ("compiled step", run_compiled)):
            got = measure(cfg)
            if got["wall"] < best.get(name, {"wall": np.inf})["wall"]:
                best[name] = got
        wall, acc, parts = run_fedflower(cfg)
        if wall < best.get("fedflower", {"wall": np.inf})["wall"]:
            best["fedflower"], breakdown = side(wall, acc, parts["cpu"]), parts
    best["bare, NumPy input to fit"] = run_bare(cfg, tf_data=False)
    return best, breakdown


def ray_sides(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Plain Flower ``run_simulation`` vs fedflower ``simulation=ray``, alternating."""
    cfg = make_cfg(args.clients, args.rounds, args.epochs, "ray")
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        for name, measure in (
            ("plain Flower (ray)", run_plain_flower),
            ("fedflower (ray)", lambda c: side(*run_fedflower(c)[:2])),
        ):
            got = measure(cfg)
            if got["wall"] < best.get(name, {"wall": np.inf})["wall"]:
                best[name] = got
    return best


def table(best: dict[str, dict[str, float]], reference: str) -> list[str]:
    """Rows ``side | wall s | ratio | CPU s | CPU ratio | final acc`` against ``reference``."""
    ref = best[reference]
    lines = [
        f"{'side':<26} {'wall s':>8} {'ratio':>7} {'CPU s':>8} {'CPU ratio':>9} {'final acc':>10}"
    ]
    for name, r in best.items():
        cpu = r.get("cpu")
        cpu_cells = (
            f"{cpu:8.2f} {cpu / ref['cpu']:9.3f}" if cpu is not None and "cpu" in ref else " " * 18
        )
        lines.append(
            f"{name:<26} {r['wall']:8.2f} {r['wall'] / ref['wall']:7.3f} {cpu_cells} "
            f"{r['accuracy']:10.4f}"
        )
    return lines


def breakdown_lines(breakdown: dict[str, float], extra: float, rounds: int) -> list[str]:
    metering = breakdown.get("crossing_nbytes", 0.0)
    serialization = breakdown.get("transmit", 0.0) + metering
    return [
        "where fedflower's time goes (best run):",
        f"  start-up (config, data, partition, model) {breakdown['startup']:7.2f} s",
        f"  rounds                                    {breakdown['rounds']:7.2f} s",
        f"    serialization (wire round trip)         {breakdown.get('transmit', 0.0):7.2f} s",
        f"    metering (serialized sizes)             {metering:7.2f} s",
        f"  extra over bare                           {extra:7.2f} s "
        f"({extra / rounds * 1000:.0f} ms per round, serialization+metering "
        f"{serialization / rounds * 1000:.0f} ms per round)",
    ]


def write(name: str, head: str, lines: list[str], best: dict[str, dict[str, float]]) -> None:
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / name
    stem.with_suffix(".json").write_text(
        json.dumps({"machine": MACHINE, "work": head, "sides": best, "lines": lines}, indent=1)
        + "\n"
    )
    stem.with_suffix(".md").write_text(
        f"Machine: {MACHINE}. {head}\n\n```\n" + "\n".join(lines) + "\n```\n"
    )


def main() -> None:
    args = ARGS or parse()
    load = os.getloadavg()[0]
    head = (
        f"{args.clients} clients x {args.epochs} local epoch(s) x {args.rounds} rounds, "
        f"hospitals data, best of {args.repeats}; load average (1 min) at the start {load:.1f}"
    )
    if args.ray:
        best = ray_sides(args)
        lines = table(best, "plain Flower (ray)")
        print(f"\n{head}\n\n" + "\n".join(lines))
        write("overhead_ray", head, lines, best)
        return
    best, breakdown = local_sides(args)
    lines = table(best, "bare")
    lines += ["", "against the compiled-step loop:", *table(best, "compiled step")[1:]]
    lines += [
        "",
        *breakdown_lines(breakdown, best["fedflower"]["wall"] - best["bare"]["wall"], args.rounds),
    ]
    print(f"\n{head}\n\n" + "\n".join(lines))
    write("overhead", head, lines, best)


if __name__ == "__main__":
    main()
