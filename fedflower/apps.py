"""The one place fedflower's Flower apps are assembled, for simulation and deployment alike.

From a composed config, :func:`server_app` builds the ``ServerApp`` (strategy plugin, the
wrappers of :mod:`fedflower.server.pipeline`, centralized evaluation, the recorder) and
:func:`client_app` the ``ClientApp`` (the client mods in one order around a ``client_fn``).
:func:`build` gives both for a simulation; :mod:`fedflower.deploy.app` builds the same two
for ``flwr run``, its ``client_fn`` reading the SuperNode's own data. Models and data are kept
per process by :func:`fedflower.client.app.cached` (one cache), so Flower's Ray engine, which
ships the ClientApp closure with every message, builds and traces a model once per worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from omegaconf import DictConfig, OmegaConf

from fedflower import keys, model_inputs
from fedflower.aggregation.preprocessing import Fitted, features
from fedflower.client.app import ClientFn, SharedModel, keras_client_fn, to_client_app
from fedflower.client.attacks import Attack, attack_mod, warn_outnumbered
from fedflower.client.keras_client import reset_optimizer
from fedflower.client.local_only import wants_local_baseline
from fedflower.client.personalization import (
    LocalNames,
    Personalization,
    local_names,
    personalization_mod,
)
from fedflower.client.privacy import privacy_mod
from fedflower.client.secagg import secagg_mod
from fedflower.client.statistics import RawData, query_handler
from fedflower.data.source import ClientData, Columns
from fedflower.determinism import seed_everything

if TYPE_CHECKING:  # the server side is imported when a server app is built: a SuperNode's
    from flwr.serverapp import ServerApp  # ClientApp process loads no plotting or datasets

    from fedflower.data.partition import FederatedData
    from fedflower.data.population import HospitalPopulation
    from fedflower.data.source import TabularSource
    from fedflower.outputs.per_client import PerClientLog
    from fedflower.server.contract import StrategyContract
    from fedflower.server.pipeline import Pipeline
    from fedflower.server.recorder import RoundMetrics

log = logging.getLogger(__name__)

GroupOptions = Callable[[str], Callable[[Context], dict[str, Any]]]
"""``options(group)(context)``: a config group's options as seen by one client message."""


def prepare(cfg: DictConfig) -> None:
    """What every run does first: Flower's log level, TensorFlow's threads, the seed."""
    from fedflower.components import configure_threads

    logging.getLogger("flwr").setLevel(logging.INFO if cfg.verbose else logging.WARNING)
    configure_threads(cfg.simulation.tf_threads)
    seed_everything(cfg.seed)


def _plain(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def client_mods(
    options: GroupOptions, attack: Mod | None = None, local: LocalNames | None = None
) -> list[Mod]:
    """The Flower client mods, outermost first: SecAgg+, DP, ``attack`` (if any), personalization.

    Secure aggregation masks what differential privacy clipped (and noised), which is the reply
    a simulated attacker made: a reply passes the mods from the last to the first. The personal
    models (:mod:`fedflower.client.personalization`) are innermost, so the other mods see only
    the global model's traffic; ``local`` names a node's local layers' variables.
    """
    mods = [secagg_mod(options("secagg")), privacy_mod(options("privacy"))]
    mods = mods if attack is None else [*mods, attack]
    personal = personalization_mod(options("personalization"), local or (lambda *_: []))
    return [*mods, personal]


def client_app(
    client_fn: ClientFn,
    options: GroupOptions,
    attack: Mod | None = None,
    local: LocalNames | None = None,
    raw: RawData | None = None,
) -> ClientApp:
    """The ``ClientApp``: ``client_fn`` behind :func:`client_mods` (and compression first).

    ``raw`` gives a node's raw table rows for the server's statistics query (see
    :mod:`fedflower.client.statistics`).
    """
    query = None if raw is None else query_handler(raw)
    return to_client_app(client_fn, mods=client_mods(options, attack, local), query=query)


def _no_training(_: Context) -> Any:
    """The statistics round's ``client_fn``: that round sends no training message."""
    raise RuntimeError("the statistics round trains no model")


def federated_preprocessing(
    cfg: DictConfig, source: TabularSource, fed: FederatedData | HospitalPopulation
) -> TabularSource:
    """A simulated table's preprocessing, fitted on statistics its clients send in messages.

    The statistics round (:func:`fedflower.server.preprocessing.federate`) runs before the
    training run, on the in-process engine (one small message per client, whatever
    ``simulation.backend``), against clients that read their raw partitions; the fitted
    preprocessing is then applied to every client's rows. A dataset without table columns is
    returned as is.
    """
    from flwr.serverapp import ServerApp

    from fedflower.data.partition import FederatedData
    from fedflower.engine.local import run_local
    from fedflower.server.preprocessing import Query, federate

    columns = source.columns
    if columns is None or source.preprocessing is not None or not isinstance(fed, FederatedData):
        return source
    query = Query(cfg.num_clients, _plain(cfg.privacy), int(cfg.seed))
    prepared: list[TabularSource] = []
    server = ServerApp()
    server.main()(lambda grid, _: prepared.append(federate(grid, source, query)))

    def raw(context: Context, _: Columns) -> tuple[ClientData, Columns]:
        return fed.client(int(context.node_config[keys.PARTITION_ID])), columns

    run_local(server, client_app(_no_training, fixed_options(cfg), raw=raw), cfg.num_clients)
    fitted = Fitted.from_dict(prepared[0].preprocessing or {})
    fed.prepare(prepared[0], lambda x: features(fitted, x, columns.categories))
    return prepared[0]


def fixed_options(cfg: DictConfig) -> GroupOptions:
    """:data:`GroupOptions` of one composed config (simulation: every client sees the same)."""

    def group(name: str) -> Callable[[Context], dict[str, Any]]:
        options = _plain(cfg[name])
        return lambda _: options

    return group


def simulated_attack(cfg: DictConfig) -> Mod | None:
    """The ``attack`` group as a client mod (its seeded fraction of clients), or ``None``."""
    attack = Attack(**_plain(cfg.get("attack") or {"name": "none"}))
    tolerated = cfg.strategy.get("num_malicious_nodes")
    if tolerated is not None:
        warn_outnumbered(attack, cfg.num_clients, int(tolerated))
    return attack_mod(attack) if attack.active else None


def server_app(
    cfg: DictConfig,
    out: Path,
    source: TabularSource,
    virtual_clock: bool = False,
    build_model: Callable[[], keras.Model] | None = None,
    per_client: PerClientLog | None = None,
    layers: StrategyLayers | None = None,
) -> tuple[ServerApp, dict[str, Any]]:
    """The experiment's ``ServerApp`` and the dict its ``results.json`` content lands in.

    Strategy from ``cfg.strategy``, centralized evaluation on ``source``'s test set, the
    recorder's outputs in ``out``. ``virtual_clock`` (simulation only) times the clients with
    ``cfg.latency``'s model on a virtual clock; otherwise the wall clock is used.
    ``build_model`` gives the server its model (default: built from ``cfg.model``).
    ``per_client`` receives the clients' evaluations (default: a new ``per_client.jsonl``).
    ``layers`` are the run's strategies (default: :func:`strategy_layers`, built first).
    """
    from fedflower.components import model_factory
    from fedflower.engine.clock import build_latency
    from fedflower.outputs.per_client import PerClientLog
    from fedflower.outputs.tracking import build_sinks
    from fedflower.server.app import CheckpointOptions, make_server_app, model_nbytes
    from fedflower.server.recorder import Recorder

    layers = strategy_layers(cfg) if layers is None else layers
    config = _plain(cfg)
    recorder = Recorder(
        out,
        cfg.num_rounds,
        progress=cfg.progress,
        sinks=build_sinks(cfg.get("tracking"), out, config),
        metrics=layers.metrics,
    )
    if build_model is None:
        build_model = model_factory(cfg, source.input_shape, source.num_classes)
    results: dict[str, Any] = {}
    if per_client is None:
        per_client = PerClientLog(out, plots=cfg.output.plots, resume=bool(cfg.get("resume")))

    def on_finish(model: keras.Model, pipeline: Pipeline) -> None:
        if cfg.output.save_model:
            save_model(model, out / "model.keras", source)
        results.update(
            recorder.finish(
                config,
                model_bytes=model_nbytes(model.get_weights()),
                num_clients=cfg.num_clients,
                plots=cfg.output.plots,
                rejected_updates=pipeline.strategy.rejected,
                **pipeline.run_report(),
                **statistics_report(source),
            )
        )

    app = make_server_app(
        strategies=(layers.plugin, layers.outer),
        strategy_options=_plain(cfg.strategy),
        client_options=_plain(cfg.client),
        num_rounds=cfg.num_rounds,
        build_model=build_model,
        source=source,
        recorder=recorder,
        on_finish=on_finish,
        seed=cfg.seed,
        latency=build_latency(cfg.get("latency")) if virtual_clock else None,
        checkpoint=CheckpointOptions(
            config=config,
            every=int(cfg.get("checkpoint", {}).get("every", 0)),
            resume=bool(cfg.get("resume")),
        ),
        compression=_plain(cfg.compression),
        per_client=per_client,
    )
    return app, results


def statistics_report(source: TabularSource) -> dict[str, Any]:
    """``results.json``'s ``statistics`` entry: the table's statistics round, if it had one."""
    report = (source.preprocessing or {}).get(keys.STATISTICS)
    return {} if report is None else {"statistics": report}


@dataclass
class StrategyLayers:
    """A run's strategies, built once: the plugin, the strategy its loop runs (the plugin in its
    privacy or SecAgg+ release, or the plugin itself), and the round metrics their hooks fill.
    """

    plugin: StrategyContract
    outer: StrategyContract
    metrics: RoundMetrics


def strategy_layers(cfg: DictConfig) -> StrategyLayers:
    """Build the strategy plugin from ``cfg.strategy`` and wrap it for ``cfg.privacy``/``secagg``.

    Raises ``ConfigError`` when the privacy budget affords no round, here, before any output of
    the run exists (the server app would refuse it too, but after the run directory got its
    partition report, TensorBoard directory and an empty ``metrics.jsonl``).
    """
    from fedflower.server.privacy import make_private
    from fedflower.server.recorder import RoundMetrics
    from fedflower.server.registry import build_strategy

    metrics = RoundMetrics()
    plugin = build_strategy(
        _plain(cfg.strategy),
        train_metrics_aggr_fn=metrics.train_hook(),
        evaluate_metrics_aggr_fn=metrics.evaluate_hook(),
    )
    outer = make_private(
        plugin, _plain(cfg.privacy), cfg.num_clients, cfg.seed, secagg=_plain(cfg.secagg)
    )
    outer.affordable_rounds(1)
    return StrategyLayers(plugin, outer, metrics)


def save_model(model: keras.Model, path: Path, source: TabularSource | None = None) -> None:
    """Save the global model whole (with an optimizer state ``load_model`` accepts).

    A table's model is saved with its preprocessing in front, so it takes raw rows.
    """
    if not model.optimizer.built:  # the server never trains: build its state so that
        model.optimizer.build(model.trainable_variables)  # load_model finds it whole
    else:  # a model shared with the in-process clients: no client's optimizer state
        reset_optimizer(model.optimizer, None)
    columns = source.columns if source is not None else None
    text = getattr(source, "table_meta", lambda: None)()  # a table's text column
    if text is not None:
        model_inputs.save(model, path, text)
        return
    if columns is None or source is None or source.preprocessing is None:
        model.save(path)
        return
    meta = {
        "numeric": list(columns.numeric),
        "categorical": list(columns.categorical),
        "label": columns.label,
        "class_names": [str(c) for c in columns.class_names or range(source.num_classes)],
        "preprocessing": source.preprocessing,
    }
    model_inputs.save(model_inputs.with_raw_inputs(model, meta), path, meta)


def build(
    cfg: DictConfig,
    out: Path,
    source: TabularSource,
    fed: FederatedData | HospitalPopulation,
) -> tuple[ServerApp, ClientApp, dict[str, Any]]:
    """A simulation's ``ServerApp`` and ``ClientApp`` (and the dict ``results.json`` lands in).

    The server and the clients take their model from the one per-process cache: with the
    in-process engine they share one model (each loads the weights it is given first), so
    Keras builds and traces its functions once; each Ray worker builds its own on first use.
    The global model's initial weights come from ``cfg.seed``; a model that does not fit the
    data fails here, before any output.
    """
    from fedflower.components import model_factory

    model = SharedModel(model_factory(cfg, source.input_shape, source.num_classes))
    seed_everything(cfg.seed)
    from fedflower.outputs.per_client import PerClientLog

    model()  # the server's model, before the strategy draws its first sample
    layers = strategy_layers(cfg)  # before per_client.jsonl or any other output exists
    per_client = PerClientLog(out, plots=cfg.output.plots, resume=bool(cfg.get("resume")))
    if wants_local_baseline(cfg.get("baseline")) and not cfg.get("resume"):
        local_baseline(cfg, model(), fed, per_client)
    server, results = server_app(
        cfg, out, source, True, model, per_client=per_client, layers=layers
    )
    client_fn = keras_client_fn(model, fed.client, cfg.seed)
    local = local_names(model(), Personalization(**_plain(cfg.personalization)))
    app = client_app(client_fn, fixed_options(cfg), simulated_attack(cfg), lambda *_: local)
    return server, app, results


def local_baseline(
    cfg: DictConfig,
    model: keras.Model,
    fed: FederatedData | HospitalPopulation,
    per_client: PerClientLog,
) -> None:
    """``baseline=local``: each site trained alone, its evaluation as ``model = local`` rows.

    The global RNGs are seeded again afterwards, so the federated run starts as without it.
    """
    from fedflower.client.local_only import local_only

    log.info("baseline=local: training each of %d sites alone", cfg.num_clients)
    sites = local_only(
        model, fed.client, cfg.num_clients, _plain(cfg.client), cfg.num_rounds, cfg.seed
    )
    for cid, metrics in sites:
        per_client.add_local(cfg.num_rounds, str(cid), metrics)
    seed_everything(cfg.seed)
