"""``run(cfg)``: one federated experiment from a composed Hydra config, testable without the CLI."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
from flwr.clientapp.typing import Mod
from flwr.serverapp import Grid, ServerApp
from omegaconf import DictConfig, OmegaConf

from fedflower.client.app import keras_client_fn, to_client_app
from fedflower.client.attacks import Attack, attack_mod
from fedflower.client.keras_client import reset_optimizer
from fedflower.client.privacy import privacy_mod
from fedflower.client.secagg import secagg_mod
from fedflower.components import configure_threads, instantiate_data, model_factory
from fedflower.data.heterogeneity import write_partition_report
from fedflower.data.partition import FederatedData
from fedflower.data.population import HospitalPopulation
from fedflower.data.source import TabularSource
from fedflower.determinism import seed_everything
from fedflower.engine import simulate
from fedflower.engine.clock import build_latency
from fedflower.errors import DataError
from fedflower.server.app import CheckpointOptions, make_server_app, model_nbytes, run_extra
from fedflower.server.checkpoint import check_resumable
from fedflower.server.privacy import make_private
from fedflower.server.recorder import Recorder
from fedflower.server.tracking import build_sinks
from fedflower.validation import validate

log = logging.getLogger(__name__)


def _output_dir(output_dir: Path | str | None) -> Path:
    if output_dir is not None:
        return Path(output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def load_federation(cfg: DictConfig) -> tuple[TabularSource, FederatedData | HospitalPopulation]:
    """The dataset and its clients: a population generates its own, others are partitioned."""
    data = instantiate_data(cfg.dataset, "dataset")
    if isinstance(data, HospitalPopulation):
        return data.source, data
    return load_data(cfg, data)


def load_data(
    cfg: DictConfig, source: TabularSource | None = None
) -> tuple[TabularSource, FederatedData]:
    """Instantiate the dataset (unless given) and split it across ``cfg.num_clients`` clients."""
    if source is None:
        source = instantiate_data(cfg.dataset, "dataset")
    if not isinstance(source, TabularSource):
        raise DataError(
            f"dataset {type(source).__name__} generates its clients' data and has no training "
            "pool to split; this tool needs a dataset such as dataset=hospitals"
        )
    partitioner = instantiate_data(cfg.partition, "partition")
    fed = FederatedData(
        source, partitioner, cfg.num_clients, val_fraction=cfg.client.val_fraction, seed=cfg.seed
    )
    return source, fed


def run(cfg: DictConfig, output_dir: Path | str | None = None) -> dict[str, Any]:
    """Run the experiment ``cfg`` describes and return its ``results.json`` content.

    Parameters
    ----------
    cfg : DictConfig
        A config composed from ``conf/config.yaml``.
    output_dir : path, optional
        Where to write the outputs; defaults to Hydra's run directory (or the working
        directory outside Hydra).
    """
    validate(cfg)
    logging.getLogger("flwr").setLevel(logging.INFO if cfg.verbose else logging.WARNING)
    configure_threads(cfg.simulation.tf_threads)
    seed_everything(cfg.seed)
    out = _output_dir(output_dir)
    if cfg.get("resume"):
        out = Path(cfg.resume)  # continue the run where it was written
        check_resumable(out, OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    source, fed = load_federation(cfg)
    build_model = model_factory(cfg, source.input_shape, source.num_classes)
    seed_everything(cfg.seed)  # the global model's initial weights come from the seed
    model = build_model()  # a model that does not fit the data fails here, before any output
    workers = simulation_workers(cfg)
    if cfg.simulation.backend == "local" and workers == 1:
        # one process: the server and every virtual client use this one model (each loads the
        # weights it is given first), so Keras builds and traces its functions once
        build_model = lambda: model  # noqa: E731
    else:
        seed_everything(cfg.seed)  # the server's own model draws the same initial weights
    server_app, results = experiment_server_app(
        cfg, out, source, virtual_clock=True, build_model=build_model
    )
    if isinstance(fed, FederatedData):
        print(write_partition_report(fed, out, plot=cfg.output.plots))
    else:  # a generated population: its size, not a row per client
        (out / "partition.json").write_text(json.dumps(fed.summary(), indent=1) + "\n")
    client_app = to_client_app(
        keras_client_fn(build_model, fed.client, cfg.seed), mods=client_mods(cfg)
    )
    simulate(
        server_app,
        client_app,
        cfg.num_clients,
        backend=cfg.simulation.backend,
        backend_config=OmegaConf.to_container(cfg.simulation.backend_config, resolve=True),  # type: ignore[arg-type]
        workers=workers,
        address=cfg.simulation.get("address"),
    )
    if not results:
        raise RuntimeError("the server app stopped before the run finished; see the log above")
    return results


def simulation_workers(cfg: DictConfig) -> int:
    """``simulation.workers`` as a number (``auto``: see ``engine.pool.default_workers``)."""
    from fedflower.engine.pool import check_workers, default_workers

    workers = cfg.simulation.get("workers", 1)
    return default_workers(cfg.num_clients) if workers == "auto" else check_workers(workers)


def client_mods(cfg: DictConfig) -> list[Mod]:
    """The Flower client mods the config asks for, outermost first.

    Secure aggregation masks what differential privacy clipped (and noised), which is the reply
    a simulated attacker made: a reply passes the mods from the last to the first.
    """
    privacy = OmegaConf.to_container(cfg.privacy, resolve=True)
    secagg = OmegaConf.to_container(cfg.secagg, resolve=True)
    mods = [secagg_mod(lambda _: secagg), privacy_mod(lambda _: privacy)]  # type: ignore[arg-type,return-value]
    options = OmegaConf.to_container(cfg.get("attack") or {"name": "none"}, resolve=True)
    attack = Attack(**options)  # type: ignore[arg-type]
    return [*mods, attack_mod(attack)] if attack.active else mods


def experiment_server_app(
    cfg: DictConfig,
    out: Path,
    source: TabularSource,
    virtual_clock: bool = False,
    build_model: Callable[[], keras.Model] | None = None,
) -> tuple[ServerApp, dict[str, Any]]:
    """The experiment's ``ServerApp`` and the dict its ``results.json`` content lands in.

    Simulation (:func:`run`) and deployment (:mod:`fedflower.deploy.app`) run this same app:
    strategy from ``cfg.strategy``, centralized evaluation on ``source``'s test set, the
    recorder's outputs in ``out``. ``virtual_clock`` (simulation only) times the clients with
    ``cfg.latency``'s model on a virtual clock; otherwise the wall clock is used.
    ``build_model`` gives the server its model (default: built from ``cfg.model``).
    """
    config = OmegaConf.to_container(cfg, resolve=True)
    sinks = build_sinks(cfg.get("tracking"), out, config)  # type: ignore[arg-type]
    recorder = Recorder(out, cfg.num_rounds, progress=cfg.progress, sinks=sinks)
    if build_model is None:
        build_model = model_factory(cfg, source.input_shape, source.num_classes)
    results: dict[str, Any] = {}

    def on_finish(model: keras.Model, grid: Grid, strategy: Any) -> None:
        if cfg.output.save_model:
            if not model.optimizer.built:  # the server never trains: build its state so that
                model.optimizer.build(model.trainable_variables)  # load_model finds it whole
            else:  # a model shared with the in-process clients: no client's optimizer state
                reset_optimizer(model.optimizer, None)
            model.save(out / "model.keras")
        results.update(
            recorder.finish(
                config,  # type: ignore[arg-type]
                model_bytes=model_nbytes(model.get_weights()),
                num_clients=cfg.num_clients,
                plots=cfg.output.plots,
                rejected_updates=int(getattr(strategy, "rejected", 0)),
                **run_extra(grid, strategy),
            )
        )

    server_app = make_server_app(
        strategy_options=OmegaConf.to_container(cfg.strategy, resolve=True),  # type: ignore[arg-type]
        client_options=OmegaConf.to_container(cfg.client, resolve=True),  # type: ignore[arg-type]
        num_rounds=cfg.num_rounds,
        build_model=build_model,
        source=source,
        recorder=recorder,
        on_finish=on_finish,
        seed=cfg.seed,
        latency=build_latency(cfg.get("latency")) if virtual_clock else None,
        checkpoint=CheckpointOptions(
            config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
            every=int(cfg.get("checkpoint", {}).get("every", 0)),
            resume=bool(cfg.get("resume")),
        ),
        compression=OmegaConf.to_container(cfg.compression, resolve=True),  # type: ignore[arg-type]
        wrap_strategy=lambda strategy: make_private(
            strategy,
            OmegaConf.to_container(cfg.privacy, resolve=True),  # type: ignore[arg-type]
            cfg.num_clients,
            cfg.seed,
            secagg=OmegaConf.to_container(cfg.secagg, resolve=True),  # type: ignore[arg-type]
        ),
    )
    return server_app, results
