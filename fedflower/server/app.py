"""Server side: the strategy plugin built from config, and the ``ServerApp`` that runs it."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from fedflower import keys
from fedflower.data.source import TabularSource
from fedflower.engine.clock import VirtualClockGrid, find_clock
from fedflower.engine.latency import LatencyModel
from fedflower.engine.metered import MeteredGrid
from fedflower.engine.stragglers import straggler_grid
from fedflower.errors import ConfigError
from fedflower.models import evaluate
from fedflower.server import registry
from fedflower.server.recorder import Recorder

log = logging.getLogger(__name__)


def strategy_options(cls: type) -> list[str] | None:
    """Keyword options a strategy class accepts, following ``**options`` up its bases.

    A subclass may name only its own options and pass ``**options`` on to its base; the
    options are then collected from each ``__init__`` up the MRO until one that takes no
    ``**kwargs``. ``None`` if the chain never closes (then no option can be checked).
    """
    names: list[str] = []
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [
            p.name
            for p in params
            if p.name != "self"
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
            and p.name not in names
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def build_strategy(options: dict[str, Any], **runtime: Any) -> Strategy:
    """Instantiate the strategy plugin named ``options["name"]`` with the other options.

    ``runtime`` objects (e.g. metric hooks) are passed only when the class accepts them.
    """
    options = dict(options)
    name = options.pop("name", None)
    if not name:
        raise ConfigError("strategy.name is missing")
    cls = registry.load(name)
    params = strategy_options(cls)
    if params is not None:
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise ConfigError(
                f"strategy {name!r} has no option {', '.join(unknown)}; "
                f"its options: {', '.join(p for p in params if p not in runtime)}"
            )
        runtime = {k: v for k, v in runtime.items() if k in params}
    try:
        return cls(**options, **runtime)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"strategy {name!r}: {exc}") from exc


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


def _report(grid: Grid, strategy: Strategy, hook: str) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    clock = find_clock(grid)
    if clock is not None:
        extra["virtual_time"] = float(clock.now)
    report = getattr(strategy, hook, None)
    if callable(report):
        extra.update(report())
    return extra


def round_extra(grid: Grid, strategy: Strategy) -> dict[str, Any]:
    """The extra fields of a metrics row: virtual time and the strategy's ``round_report()``.

    A strategy reports its own metrics (asynchronous statistics, privacy budget, ...) by
    defining ``round_report() -> dict`` (since the last call) and ``run_report() -> dict``
    (totals for ``results.json``); both are optional.
    """
    return _report(grid, strategy, "round_report")


def run_extra(grid: Grid, strategy: Strategy) -> dict[str, Any]:
    """Totals for ``results.json``: the final virtual time and the strategy's ``run_report()``."""
    return _report(grid, strategy, "run_report")


def make_server_app(
    *,
    strategy_options: dict[str, Any],
    client_options: dict[str, Any],
    num_rounds: int,
    build_model: Callable[[], keras.Model],
    source: TabularSource,
    recorder: Recorder,
    on_finish: Callable[[keras.Model, MeteredGrid, Strategy], None],
    seed: int = 0,
    latency: LatencyModel | None = None,
    wrap_strategy: Callable[[Strategy], Strategy] | None = None,
) -> ServerApp:
    """A ``ServerApp`` that runs the strategy with centralized evaluation and metering.

    ``seed`` seeds the choice of stragglers (``client.straggler_fraction``). ``latency`` gives
    the run a virtual clock (:class:`~fedflower.engine.clock.VirtualClockGrid`, simulation
    only); without it asynchronous strategies use the wall clock, as in a deployment.
    ``wrap_strategy`` wraps the built strategy (e.g. for differential privacy).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        # with a latency model, time is virtual (simulation); without, it is the wall clock
        metered = MeteredGrid(grid) if latency is None else VirtualClockGrid(grid, latency)
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
                **round_extra(metered, strategy),
            )
            return MetricRecord({"loss": float(res["loss"]), "accuracy": float(res["accuracy"])})

        recorder.start()
        result = strategy.start(
            grid=straggler_grid(metered, client_options, strategy, seed),
            initial_arrays=ArrayRecord(model.get_weights()),
            num_rounds=num_rounds,
            train_config=train_config(client_options),
            evaluate_config=ConfigRecord({keys.BATCH_SIZE: 1024}),
            evaluate_fn=evaluate_fn,
        )
        if len(result.arrays):
            model.set_weights(result.arrays.to_numpy_ndarrays())
        on_finish(model, metered, strategy)

    return app
