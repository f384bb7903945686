"""Server side: the strategy plugin built from config, and the ``ServerApp`` that runs it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result

from fedflower import keys, wire
from fedflower.data.source import TabularSource
from fedflower.engine.latency import LatencyModel
from fedflower.errors import ConfigError
from fedflower.models import evaluate
from fedflower.outputs.per_client import PerClientLog
from fedflower.server.async_strategy import AsyncStrategy
from fedflower.server.checkpoint import Checkpointer, Resumed, checkpointed
from fedflower.server.contract import StrategyContract
from fedflower.server.deadline import with_deadline
from fedflower.server.pipeline import Pipeline, build_pipeline
from fedflower.server.recorder import Recorder
from fedflower.steps import steps_of

log = logging.getLogger(__name__)


def train_config(client: dict[str, Any]) -> ConfigRecord:
    """The settings sent to clients with every training round."""
    return ConfigRecord(
        {
            keys.LOCAL_EPOCHS: int(client["local_epochs"]),
            keys.BATCH_SIZE: int(client["batch_size"]),
            keys.LEARNING_RATE: float(client["learning_rate"]),
        }
    )


def model_nbytes(weights: list[np.ndarray]) -> int:
    """Raw size of a model's weights in bytes."""
    return int(sum(w.nbytes for w in weights))


@dataclass(frozen=True)
class CheckpointOptions:
    """How a run checkpoints: every ``every`` rounds (0 = never); ``resume`` from its directory."""

    config: dict[str, Any]
    every: int = 1
    resume: bool = False


ASYNC_UNCHECKPOINTED = (
    "an asynchronous run is checkpointed only in simulation, on the virtual clock (a latency "
    "model), without compression or stragglers"
)


def checkpointer(
    options: CheckpointOptions | None, pipeline: Pipeline, recorder: Recorder
) -> Checkpointer | None:
    """The run's :class:`Checkpointer`, or ``None`` (no checkpoint).

    An asynchronous strategy is checkpointed only when it talks to the virtual clock through
    the meter alone (:attr:`Pipeline.direct_clock`): on the wall clock (a deployment) its
    tasks in flight ran on real nodes and cannot be re-issued identically, and the
    compression and straggler wrappers keep state of their own. Resuming such a run is
    refused in one line.
    """
    if options is None:
        return None
    if isinstance(pipeline.strategy, AsyncStrategy) and not pipeline.direct_clock:
        if options.resume:
            raise ConfigError(f"resume: {ASYNC_UNCHECKPOINTED}; this run cannot be resumed")
        if options.every > 0:
            log.warning("%s: this run writes no checkpoint", ASYNC_UNCHECKPOINTED)
        return None
    objects = pipeline.stateful(recorder=recorder)
    return Checkpointer(
        recorder.output_dir, options.config, options.every, objects, resume=options.resume
    )


def load_record(model: Any, record: ArrayRecord) -> None:
    """Set the server's model to the global model ``record`` (keyed by variable path)."""
    names = wire.variable_names(model)
    steps_of(model).set_weights(wire.arrays_for(record, names, None, "the global model"))


def run_strategy(
    pipeline: Pipeline,
    *,
    initial_arrays: ArrayRecord,
    num_rounds: int,
    checkpointer: Checkpointer | None,
    **options: Any,
) -> Result:
    """The pipeline's strategy run by its loop: Flower's ``Strategy.start`` for synchronous
    strategies (with the checkpoint hook and, resuming, from the checkpoint's round), the
    event loop of :class:`~fedflower.server.async_strategy.AsyncStrategy` for asynchronous ones.

    A strategy that may stop early (a privacy budget) says how many rounds it will run through
    ``affordable_rounds(num_rounds) -> int``. An asynchronous strategy is given the run's
    clock (``None``: the wall clock).
    """
    strategy, grid = pipeline.strategy, pipeline.grid
    num_rounds = strategy.affordable_rounds(num_rounds)
    if isinstance(strategy, AsyncStrategy):
        return strategy.start(
            grid=grid,
            initial_arrays=initial_arrays,
            num_rounds=num_rounds,
            checkpoint=checkpointer,
            clock=pipeline.clock,
            **options,
        )
    if checkpointer is None:
        return strategy.start(
            grid=grid, initial_arrays=initial_arrays, num_rounds=num_rounds, **options
        )
    done, arrays = 0, initial_arrays
    if checkpointer.resume:
        done, arrays = checkpointer.restore(list(initial_arrays.keys()))
        log.info("resuming after round %s from %s", done, checkpointer.path)
    options["evaluate_fn"] = checkpointed(options["evaluate_fn"], checkpointer, done, num_rounds)
    return (Resumed(strategy, done) if done else strategy).start(
        grid=grid, initial_arrays=arrays, num_rounds=num_rounds - done, **options
    )


def make_server_app(
    *,
    strategies: tuple[StrategyContract, StrategyContract],
    strategy_options: dict[str, Any],
    client_options: dict[str, Any],
    num_rounds: int,
    build_model: Callable[[], keras.Model],
    source: TabularSource,
    recorder: Recorder,
    on_finish: Callable[[keras.Model, Pipeline], None],
    seed: int = 0,
    latency: LatencyModel | None = None,
    checkpoint: CheckpointOptions | None = None,
    compression: dict[str, Any] | None = None,
    per_client: PerClientLog | None = None,
) -> ServerApp:
    """A ``ServerApp`` that runs the strategy with centralized evaluation and metering.

    The wrappers around the engine's grid and the strategy are one
    :class:`~fedflower.server.pipeline.Pipeline`. ``seed`` seeds the choice of stragglers
    (``client.straggler_fraction``). ``latency`` gives the run a virtual clock
    (:class:`~fedflower.engine.clock.VirtualClockGrid`, simulation only); without it
    asynchronous strategies use the wall clock, as in a deployment.
    ``checkpoint`` makes the strategy write ``checkpoint.npz`` in the recorder's directory,
    and resume from it (see :mod:`fedflower.server.checkpoint`; asynchronous strategies on
    the virtual clock only, see :func:`checkpointer`).
    ``compression`` (the config group's options) encodes models and decodes updates outside
    the metering, so the bytes counted are the compressed ones.
    ``strategies`` are the plugin and the strategy the loop runs (the plugin in its privacy or
    SecAgg+ release, or the plugin itself), built once by the caller; ``strategy_options``
    give the round deadline (:mod:`fedflower.server.deadline`).
    ``per_client`` receives every client's federated evaluation (synchronous strategies).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        model = build_model()
        strategy, outer = strategies
        pipeline = build_pipeline(
            grid,
            strategy,
            latency=latency,
            compression=compression,
            client_options=client_options,
            seed=seed,
            outer=outer,
            per_client=per_client,
        )
        with_deadline(pipeline, strategy, strategy_options)

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            load_record(model, arrays)
            res = evaluate(model, source.x_test, source.y_test, batch_size=1024)
            down, up = pipeline.meter.take()
            recorder.round_end(
                server_round,
                float(res["loss"]),
                float(res["accuracy"]),
                down,
                up,
                **pipeline.round_report(),
            )
            return MetricRecord({"loss": float(res["loss"]), "accuracy": float(res["accuracy"])})

        recorder.start()
        result = run_strategy(
            pipeline,
            initial_arrays=wire.model_record(model),
            num_rounds=num_rounds,
            train_config=train_config(client_options),
            evaluate_config=ConfigRecord({keys.BATCH_SIZE: 1024}),
            evaluate_fn=evaluate_fn,
            checkpointer=checkpointer(checkpoint, pipeline, recorder),
        )
        if len(result.arrays):
            load_record(model, result.arrays)
        on_finish(model, pipeline)

    return app
