"""What fedflower costs on top of a bare Keras loop doing the same federated work.

Both sides, in one process and one run, do N clients x E local epochs x R rounds on the default
hospitals data with the same model, optimizer, batch size and data split: per round every client
sets the global weights, resets its optimizer, trains, returns its weights; the server averages
them (weighted by examples); every client evaluates the new global model on its validation split;
the server evaluates it on the central test set.

(a) fedflower: ``experiment.run(cfg)`` through the ServerApp/ClientApp, Flower strategy and
    the in-process engine (``simulation=local``), every message serialized to Flower's wire
    objects and metered.
(b) bare: a plain Python loop over the same Keras model.
(c) optional (``--ray``): fedflower on Flower's Ray simulation engine (``simulation=ray``).

Usage::

    python bench/overhead.py                       # 10 clients x 1 epoch x 20 rounds
    python bench/overhead.py --clients 10 --rounds 3 --ray
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, redirect_stdout
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
    parser.add_argument("--ray", action="store_true", help="also time Flower's Ray engine")
    return parser.parse_args()


ARGS = parse() if __name__ == "__main__" else None

from fedflower.startup import quiet_tensorflow_import

quiet_tensorflow_import()

import keras
import numpy as np
import tensorflow as tf
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from fedflower.aggregation import weighted_mean
from fedflower.client.keras_client import reset_optimizer
from fedflower.engine import clock, metered
from fedflower.engine import local as local_engine
from fedflower.experiment import configure_threads, load_data, run
from fedflower.models import compile_model


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
def timed(module: Any, name: str, totals: dict[str, float]) -> Any:
    """Add the time spent in ``module.name`` to ``totals[name]`` while the block runs."""
    original: Callable[..., Any] = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def run_fedflower(cfg: Any) -> tuple[float, float, dict[str, float]]:
    """Wall time, final accuracy and a breakdown of one fedflower run."""
    totals: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as out, redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        with (
            timed(local_engine, "transmit", totals),
            timed(metered, "message_nbytes", totals),
            timed(clock, "message_nbytes", totals),
        ):
            results = run(cfg, output_dir=out)
        wall = time.perf_counter() - t0
    totals["rounds"] = results["totals"]["seconds"]
    totals["startup"] = wall - totals["rounds"]
    return wall, results["final"]["accuracy"], totals


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, tf_data: bool) -> dict[str, float]:
    if tf_data:
        return model.evaluate(
            tf.data.Dataset.from_tensor_slices((x, y)).batch(1024), verbose=0, return_dict=True
        )
    return model.evaluate(x, y, batch_size=1024, verbose=0, return_dict=True)


def run_bare(cfg: Any, tf_data: bool = True) -> tuple[float, float]:
    """The same federated work as a plain Keras loop.

    With ``tf_data`` the local data go through the same seeded ``tf.data`` pipeline fedflower's
    client uses; without, ``model.fit`` gets NumPy arrays (what a quick script would do).
    """
    t0 = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    source, fed = load_data(cfg)
    clients = [fed.client(c) for c in range(cfg.num_clients)]
    model = instantiate(cfg.model, input_shape=source.input_shape, num_classes=source.num_classes)
    optimizer = instantiate(cfg.client.optimizer, learning_rate=cfg.client.learning_rate)
    compile_model(model, optimizer, source.num_classes)
    weights = model.get_weights()
    accuracy = 0.0
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
    return time.perf_counter() - t0, accuracy


def main() -> None:
    args = ARGS or parse()

    cfg = make_cfg(args.clients, args.rounds, args.epochs, "local")
    configure_threads(cfg.simulation.tf_threads)
    best: dict[str, tuple[float, float]] = {}
    breakdown: dict[str, float] = {}
    for _ in range(args.repeats):
        wall, acc = run_bare(cfg)
        if wall < best.get("bare", (np.inf, 0))[0]:
            best["bare"] = (wall, acc)
        wall, acc, parts = run_fedflower(cfg)
        if wall < best.get("fedflower", (np.inf, 0))[0]:
            best["fedflower"], breakdown = (wall, acc), parts
    best["bare, NumPy input to fit"] = run_bare(cfg, tf_data=False)
    if args.ray:
        wall, acc, _ = run_fedflower(make_cfg(args.clients, args.rounds, args.epochs, "ray"))
        best["fedflower (ray engine)"] = (wall, acc)

    bare = best["bare"][0]
    print(
        f"\n{args.clients} clients x {args.epochs} local epoch(s) x {args.rounds} rounds, "
        f"hospitals data, best of {args.repeats}\n"
    )
    print(f"{'side':<24} {'wall s':>8} {'ratio':>7} {'final acc':>10}")
    for name, (wall, acc) in best.items():
        print(f"{name:<24} {wall:8.2f} {wall / bare:7.3f} {acc:10.4f}")
    extra = best["fedflower"][0] - bare
    serialization = breakdown.get("transmit", 0.0) + breakdown.get("message_nbytes", 0.0)
    print("\nwhere fedflower's time goes (best run):")
    print(f"  start-up (config, data, partition, model) {breakdown['startup']:7.2f} s")
    print(f"  rounds                                    {breakdown['rounds']:7.2f} s")
    print(f"    serialization (wire round trip)         {breakdown.get('transmit', 0.0):7.2f} s")
    print(
        f"    metering (serialized sizes)             {breakdown.get('message_nbytes', 0.0):7.2f} s"
    )
    print(
        f"  extra over bare                           {extra:7.2f} s "
        f"({extra / args.rounds * 1000:.0f} ms per round, serialization+metering "
        f"{serialization / args.rounds * 1000:.0f} ms per round)"
    )


if __name__ == "__main__":
    main()
