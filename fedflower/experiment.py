"""``run(cfg)``: one federated experiment from a composed Hydra config, testable without the CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import keras
from flwr.serverapp import ServerApp
from omegaconf import DictConfig, OmegaConf

from fedflower.client.app import keras_client_fn, to_client_app
from fedflower.client.privacy import privacy_mod
from fedflower.client.secagg import secagg_mod
from fedflower.components import configure_threads, instantiate_data, model_factory
from fedflower.data.partition import FederatedData
from fedflower.data.source import TabularSource
from fedflower.determinism import seed_everything
from fedflower.engine import simulate
from fedflower.engine.clock import build_latency
from fedflower.engine.metered import MeteredGrid
from fedflower.server.app import make_server_app, model_nbytes, run_extra
from fedflower.server.privacy import make_private
from fedflower.server.recorder import Recorder
from fedflower.validation import validate

log = logging.getLogger(__name__)


def _output_dir(output_dir: Path | str | None) -> Path:
    if output_dir is not None:
        return Path(output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def load_data(cfg: DictConfig) -> tuple[TabularSource, FederatedData]:
    """Instantiate the dataset and split it across ``cfg.num_clients`` clients."""
    source = instantiate_data(cfg.dataset, "dataset")
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
    source, fed = load_data(cfg)
    server_app, results = experiment_server_app(cfg, out, source, virtual_clock=True)
    (out / "partition.json").write_text(json.dumps(fed.summary(), indent=1) + "\n")
    build_model = model_factory(cfg, source.input_shape, source.num_classes)
    privacy = OmegaConf.to_container(cfg.privacy, resolve=True)
    secagg = OmegaConf.to_container(cfg.secagg, resolve=True)
    client_app = to_client_app(
        keras_client_fn(build_model, fed.client, cfg.seed),
        mods=[secagg_mod(lambda _: secagg), privacy_mod(lambda _: privacy)],  # type: ignore[arg-type,return-value]
    )
    simulate(
        server_app,
        client_app,
        cfg.num_clients,
        backend=cfg.simulation.backend,
        backend_config=OmegaConf.to_container(cfg.simulation.backend_config, resolve=True),  # type: ignore[arg-type]
    )
    if not results:
        raise RuntimeError("the server app stopped before the run finished; see the log above")
    return results


def experiment_server_app(
    cfg: DictConfig, out: Path, source: TabularSource, virtual_clock: bool = False
) -> tuple[ServerApp, dict[str, Any]]:
    """The experiment's ``ServerApp`` and the dict its ``results.json`` content lands in.

    Simulation (:func:`run`) and deployment (:mod:`fedflower.deploy.app`) run this same app:
    strategy from ``cfg.strategy``, centralized evaluation on ``source``'s test set, the
    recorder's outputs in ``out``. ``virtual_clock`` (simulation only) times the clients with
    ``cfg.latency``'s model on a virtual clock; otherwise the wall clock is used.
    """
    recorder = Recorder(out, cfg.num_rounds, progress=cfg.progress)
    build_model = model_factory(cfg, source.input_shape, source.num_classes)
    results: dict[str, Any] = {}

    def on_finish(model: keras.Model, grid: MeteredGrid, strategy: Any) -> None:
        if cfg.output.save_model:
            if not model.optimizer.built:  # the server never trains: build its state so that
                model.optimizer.build(model.trainable_variables)  # load_model finds it whole
            model.save(out / "model.keras")
        results.update(
            recorder.finish(
                OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
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
        wrap_strategy=lambda strategy: make_private(
            strategy,
            OmegaConf.to_container(cfg.privacy, resolve=True),  # type: ignore[arg-type]
            cfg.num_clients,
            cfg.seed,
            secagg=OmegaConf.to_container(cfg.secagg, resolve=True),  # type: ignore[arg-type]
        ),
    )
    return server_app, results
