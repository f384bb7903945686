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
from flwr.serverapp.strategy import Result, Strategy

from fedflower import keys
from fedflower.data.source import TabularSource
from fedflower.engine.clock import VirtualClockGrid, find_clock
from fedflower.engine.latency import LatencyModel
from fedflower.engine.metered import MeteredGrid
from fedflower.engine.stragglers import straggler_grid
from fedflower.errors import ConfigError
from fedflower.models import evaluate
from fedflower.server.async_strategy import AsyncStrategy
from fedflower.server.checkpoint import Checkpointer, run_rounds, stateful
from fedflower.server.compression import compressed_grid
from fedflower.server.recorder import Recorder
from fedflower.server.registry import build_strategy

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


def _wrappers(grid: Grid) -> list[object]:
    """``grid`` and the grids it wraps (through ``.inner`` attributes)."""
    chain: list[object] = []
    node: object = grid
    while node is not None and len(chain) < 16:
        chain.append(node)
        node = getattr(node, "inner", None)
    return chain


def _report(grid: Grid, strategy: Strategy, hook: str) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    clock = find_clock(grid)
    if clock is not None:
        extra["virtual_time"] = float(clock.now)
    for source in (*_wrappers(grid), strategy):
        report = getattr(source, hook, None)
        if callable(report):
            extra.update(report())
    return extra


def round_extra(grid: Grid, strategy: Strategy) -> dict[str, Any]:
    """The extra fields of a metrics row: virtual time and the strategy's ``round_report()``.

    A strategy reports its own metrics (asynchronous statistics, privacy budget, ...) by
    defining ``round_report() -> dict`` (since the last call) and ``run_report() -> dict``
    (totals for ``results.json``); both are optional. Grid wrappers (compression) report
    the same way.
    """
    return _report(grid, strategy, "round_report")


def run_extra(grid: Grid, strategy: Strategy) -> dict[str, Any]:
    """Totals for ``results.json``: the final virtual time and the strategy's ``run_report()``."""
    return _report(grid, strategy, "run_report")


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
    options: CheckpointOptions | None, strategy: Strategy, recorder: Recorder, grid: Grid
) -> Checkpointer | None:
    """The run's :class:`Checkpointer`, or ``None`` (no checkpoint).

    ``grid`` is the one the strategy talks to. An asynchronous strategy is checkpointed only
    when that grid is the virtual clock itself: on the wall clock (a deployment) its tasks in
    flight ran on real nodes and cannot be re-issued identically, and the compression and
    straggler wrappers keep state of their own. Resuming such a run is refused in one line.
    """
    if options is None:
        return None
    if isinstance(strategy, AsyncStrategy) and not isinstance(grid, VirtualClockGrid):
        if options.resume:
            raise ConfigError(f"resume: {ASYNC_UNCHECKPOINTED}; this run cannot be resumed")
        if options.every > 0:
            log.warning("%s: this run writes no checkpoint", ASYNC_UNCHECKPOINTED)
        return None
    objects = stateful(strategy, recorder=recorder, clock=find_clock(grid))
    return Checkpointer(
        recorder.output_dir, options.config, options.every, objects, resume=options.resume
    )


def run_strategy(
    strategy: Strategy,
    *,
    grid: Grid,
    initial_arrays: ArrayRecord,
    num_rounds: int,
    checkpointer: Checkpointer | None,
    **options: Any,
) -> Result:
    """``strategy.start``, or with a checkpointer the resumable loop of the same rounds.

    A strategy that may stop early (a privacy budget) says how many rounds it will run through
    ``affordable_rounds(num_rounds) -> int``.
    """
    affordable = getattr(strategy, "affordable_rounds", None)
    if callable(affordable):
        num_rounds = affordable(num_rounds)
    if checkpointer is None:
        return strategy.start(
            grid=grid, initial_arrays=initial_arrays, num_rounds=num_rounds, **options
        )
    if isinstance(strategy, AsyncStrategy):
        return strategy.start(
            grid=grid,
            initial_arrays=initial_arrays,
            num_rounds=num_rounds,
            checkpoint=checkpointer,
            **options,
        )
    first, arrays = 1, initial_arrays
    if checkpointer.resume:
        done, arrays = checkpointer.restore()
        first = done + 1
        log.info("resuming after round %s from %s", done, checkpointer.path)
    return run_rounds(
        strategy,
        grid,
        arrays,
        first_round=first,
        num_rounds=num_rounds,
        after_round=lambda rnd, a: checkpointer.save(rnd, a, last=rnd == num_rounds),
        **options,
    )


def make_server_app(
    *,
    strategy_options: dict[str, Any],
    client_options: dict[str, Any],
    num_rounds: int,
    build_model: Callable[[], keras.Model],
    source: TabularSource,
    recorder: Recorder,
    on_finish: Callable[[keras.Model, Grid, Strategy], None],
    seed: int = 0,
    latency: LatencyModel | None = None,
    checkpoint: CheckpointOptions | None = None,
    compression: dict[str, Any] | None = None,
    wrap_strategy: Callable[[Strategy], Strategy] | None = None,
) -> ServerApp:
    """A ``ServerApp`` that runs the strategy with centralized evaluation and metering.

    ``seed`` seeds the choice of stragglers (``client.straggler_fraction``). ``latency`` gives
    the run a virtual clock (:class:`~fedflower.engine.clock.VirtualClockGrid`, simulation
    only); without it asynchronous strategies use the wall clock, as in a deployment.
    ``checkpoint`` makes the strategy write ``checkpoint.npz`` in the recorder's directory,
    and resume from it (see :mod:`fedflower.server.checkpoint`; asynchronous strategies on
    the virtual clock only, see :func:`checkpointer`).
    ``compression`` (the config group's options) encodes models and decodes updates outside
    the metering, so the bytes counted are the compressed ones.
    ``wrap_strategy`` wraps the built strategy (e.g. for differential privacy).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        # with a latency model, time is virtual (simulation); without, it is the wall clock
        metered = MeteredGrid(grid) if latency is None else VirtualClockGrid(grid, latency)
        wire = compressed_grid(metered, compression, seed)
        model = build_model()
        strategy = build_strategy(
            strategy_options,
            train_metrics_aggr_fn=recorder.train_metrics_hook(),
            evaluate_metrics_aggr_fn=recorder.evaluate_metrics_hook(),
        )
        if wrap_strategy is not None:
            strategy = wrap_strategy(strategy)

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model.set_weights(arrays.to_numpy_ndarrays())
            res = evaluate(model, source.x_test, source.y_test, batch_size=1024)
            down, up = metered.take()
            recorder.round_end(
                server_round,
                float(res["loss"]),
                float(res["accuracy"]),
                down,
                up,
                **round_extra(wire, strategy),
            )
            return MetricRecord({"loss": float(res["loss"]), "accuracy": float(res["accuracy"])})

        recorder.start()
        strategy_grid = straggler_grid(wire, client_options, strategy, seed)
        result = run_strategy(
            strategy,
            grid=strategy_grid,
            initial_arrays=ArrayRecord(model.get_weights()),
            num_rounds=num_rounds,
            train_config=train_config(client_options),
            evaluate_config=ConfigRecord({keys.BATCH_SIZE: 1024}),
            evaluate_fn=evaluate_fn,
            checkpointer=checkpointer(checkpoint, strategy, recorder, strategy_grid),
        )
        if len(result.arrays):
            model.set_weights(result.arrays.to_numpy_ndarrays())
        on_finish(model, wire, strategy)

    return app
