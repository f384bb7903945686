"""One config for simulation and deployment: Hydra composition driven by Flower's run config.

``flwr run . --run-config "overrides='num_rounds=3 strategy.fraction_train=0.5'"`` hands the
override string to the ServerApp and to every ClientApp in ``Context.run_config``; both
compose ``conf/config.yaml`` with it exactly as the ``fedflower`` command composes its
command line, so an experiment that ran in simulation runs unchanged on a SuperLink.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fedflower import keys
from fedflower.errors import ConfigError
from fedflower.startup import CONFIG_MODULE, CONFIG_NAME, hydra_error_line

DEFAULT_OUTPUT_ROOT = Path("outputs") / "deploy"


def split_overrides(text: str) -> list[str]:
    """Split a run config's ``overrides`` string into Hydra overrides (shell-style quoting)."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ConfigError(
            f"run config {keys.RUN_OVERRIDES}={text!r} cannot be split ({exc}); "
            "give space-separated Hydra overrides such as 'num_rounds=3 strategy=fedavg'"
        ) from exc


@lru_cache(maxsize=8)
def _compose(overrides: tuple[str, ...]) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # e.g. inside a Hydra app: compose beside it
        GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides))
    except Exception as exc:  # Hydra/OmegaConf raise many types; all mean a bad override
        raise ConfigError(
            f"run config {keys.RUN_OVERRIDES}={' '.join(overrides)!r}: {hydra_error_line(exc)}"
        ) from exc
    return cfg


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides (cached per override list)."""
    return _compose(tuple(overrides))


def experiment_config(run_config: Mapping[str, Any]) -> DictConfig:
    """The experiment's config from a Flower run config (its ``overrides`` string)."""
    return compose_config(split_overrides(str(run_config.get(keys.RUN_OVERRIDES, ""))))


def output_dir(run_config: Mapping[str, Any], run_id: int) -> Path:
    """Where the ServerApp writes the run's outputs.

    The run config's ``output-dir`` when set (relative paths are relative to the SuperLink's
    working directory), else ``outputs/deploy/run-<run id>``.
    """
    given = str(run_config.get(keys.RUN_OUTPUT_DIR, "") or "")
    path = Path(given).expanduser() if given else DEFAULT_OUTPUT_ROOT / f"run-{run_id}"
    path.mkdir(parents=True, exist_ok=True)
    return path
