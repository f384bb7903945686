"""``run(cfg)``: one federated experiment from a composed Hydra config, testable without the CLI.

The apps come from :func:`fedflower.apps.build`; this module loads the data, writes the
partition report and hands the apps to the simulation engine.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fedflower import apps
from fedflower.backend import use_backend
from fedflower.client.local_only import wants_local_baseline
from fedflower.client.personalization import Personalization
from fedflower.components import instantiate_data
from fedflower.data.heterogeneity import write_partition_report
from fedflower.data.partition import FederatedData
from fedflower.data.population import HospitalPopulation
from fedflower.data.source import TabularSource
from fedflower.engine import simulate
from fedflower.errors import DataError
from fedflower.server.checkpoint import check_resumable
from fedflower.server.rules import validate

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
    """Instantiate the dataset (unless given) and split it across ``cfg.num_clients`` clients.

    A table's rows stay raw (see :func:`fedflower.apps.federated_preprocessing`).
    """
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
    use_backend(cfg.get("backend", "tensorflow"))  # Keras runs on it, or one error line
    backends = simulation_backends(cfg)  # installed: checked before any output
    wants_local_baseline(cfg.get("baseline"))  # bad values fail here, within a second
    Personalization(**OmegaConf.to_container(cfg.personalization, resolve=True))  # type: ignore[arg-type]
    absolute_data_paths(cfg)
    apps.prepare(cfg)
    out = _output_dir(output_dir)
    if cfg.get("resume"):
        out = Path(cfg.resume)  # continue the run in its own directory
        check_resumable(out, OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    source, fed = load_federation(cfg)
    source = apps.federated_preprocessing(cfg, source, fed)
    server_app, client_app, results = apps.build(cfg, out, source, fed)
    if isinstance(fed, FederatedData):
        print(write_partition_report(fed, out, plot=cfg.output.plots))
    else:  # a generated population: its size, not a row per client
        (out / "partition.json").write_text(json.dumps(fed.summary(), indent=1) + "\n")
    simulate(
        server_app,
        client_app,
        cfg.num_clients,
        backend=cfg.simulation.backend,
        backend_config=OmegaConf.to_container(cfg.simulation.backend_config, resolve=True),  # type: ignore[arg-type]
        workers=simulation_workers(cfg),
        address=cfg.simulation.get("address"),
        backends=backends,
        threads=cfg.simulation.tf_threads,
        start_workers_after=cfg.simulation.get("start_workers_after"),
    )
    if not results:
        raise RuntimeError("the server app stopped before the run finished; see the log above")
    return results


def simulation_workers(cfg: DictConfig) -> int:
    """``simulation.workers`` as a number (``auto``: see ``engine.pool.default_workers``)."""
    from fedflower.engine.pool import check_workers, default_workers

    workers = cfg.simulation.get("workers", 1)
    if workers == "auto":
        return default_workers(clients_per_round(cfg))
    return check_workers(workers)


def clients_per_round(cfg: DictConfig) -> int:
    """Clients training at once: the strategy's ``concurrency`` (asynchronous strategies) or
    its sampled fraction of ``num_clients`` (at least ``min_train_nodes``).
    """
    import math

    strategy = cfg.strategy
    if strategy.get("concurrency") is not None:
        return max(1, min(int(strategy.concurrency), int(cfg.num_clients)))
    sampled = math.ceil(float(strategy.get("fraction_train", 1.0)) * cfg.num_clients)
    return max(1, min(int(cfg.num_clients), max(sampled, int(strategy.get("min_train_nodes", 1)))))


def simulation_backends(cfg: DictConfig) -> list[str]:
    """``simulation.backends``: the Keras backends cycled over the clients (empty: none).

    :func:`~fedflower.server.rules.validate` checked the names; here each must be installed.
    """
    from fedflower.engine.pool import check_backends

    return check_backends(cfg.simulation.get("backends"), cfg.simulation.backend, installed=True)


DATA_PATH_KEYS = ("path", "test_path")
"""Dataset options naming files: recorded as absolute paths (``export`` reads them anywhere)."""


def absolute_data_paths(cfg: DictConfig) -> None:
    """Make the dataset's file paths absolute, so the recorded config works from any folder."""
    for key in DATA_PATH_KEYS:
        value = cfg.dataset.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            cfg.dataset[key] = str(Path(value).expanduser().resolve())
