"""Rules between config groups, asked of the objects they configure, never of their names.

A strategy states what it needs (:attr:`synchronous` rounds to sample and account,
:attr:`combines_single_updates` for robust rules that select or trim updates, and
:meth:`check_clients` for options bounded by the federation's size), declared with their
defaults by :class:`~fedflower.server.contract.StrategyContract`, so a plugin strategy
declares its own rules by overriding them. Each group's value rules live with the
code the group configures (a dataclass's ``__post_init__`` for the groups Hydra types, see
:func:`build_typed_groups`); this module adds only what spans groups, plus the run-level numbers.

:func:`validate` runs right after composing the command line (before TensorFlow is imported)
and again at the start of every run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fedflower.aggregation.codecs import codecs_from_options
from fedflower.backend import check_backend
from fedflower.checks import check_choice
from fedflower.engine import BACKENDS
from fedflower.engine.pool import check_backends
from fedflower.errors import ConfigError
from fedflower.outputs.tracking import check_tracking
from fedflower.server import registry
from fedflower.server.contract import StrategyContract
from fedflower.server.options import PRIVACY, SECAGG, build_options, run_options

SECURE_PRIVACY = ("none", "dp_client")
"""Privacy modes that compose with SecAgg+: the server must not need to see single updates."""

UNSOUND_WITH_UPDATE_COMPRESSION = {
    "privacy": {
        "dp_client": "clients clip their update before it is encoded; the encoding (and the "
        "error-feedback residual) can push it past the clipping norm the noise is scaled to",
        "dp_adaptive": "clients clip their update before it is encoded; the encoding (and the "
        "error-feedback residual) can push it past the clipping norm the noise is scaled to",
    },
    "secagg": {
        "secaggplus": "secure aggregation sums masked integer vectors; per-client scales, "
        "supports and residuals of compressed updates do not add up",
    },
}
"""Update compression with these privacy/secagg options is refused (and why); compressing
the models sent to clients (``compression.down``) is sound with all of them."""


def validate(cfg: DictConfig) -> None:
    """Check the values a typo or a bad override can break, with one clear message each."""
    # first: typed groups interpolate these (latency.seed: ${seed}), so a bad one would
    # otherwise surface as a typed group's interpolation error
    n = run_options(cfg).num_clients
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{missing[0]} must be set, got nothing: add {missing[0]}=... to the command line "
            "(e.g. dataset=csv dataset.path=data.csv, model=keras_file model.path=model.keras)"
        )
    strategy = registry.build_strategy(OmegaConf.to_container(cfg.strategy, resolve=True))  # type: ignore[arg-type]
    strategy.check_clients(n)
    build_typed_groups(cfg)
    check_choice("simulation.backend", cfg.simulation.backend, BACKENDS)
    check_backend(cfg.get("backend", "tensorflow"))
    check_backends(cfg.simulation.get("backends"), cfg.simulation.backend)
    _check_checkpoint(cfg)
    check_text_pairing(cfg)
    check_tracking(cfg.get("tracking"))
    validate_compression(cfg)
    if "privacy" in cfg:
        validate_privacy(cfg, strategy)
    if "secagg" in cfg:
        validate_secagg(cfg, strategy)


def build_typed_groups(cfg: DictConfig) -> None:
    """Build each group that a dataclass types (Hydra structured config), so its rules run.

    Hydra checked the keys and types while composing; building the dataclass runs its
    ``__post_init__``, where the rules on values live (e.g. ``client``, ``attack``: see
    :mod:`fedflower.client.options`). Groups without a schema are left to their own code.
    """
    for key in cfg:
        node = cfg.get(key)
        if OmegaConf.is_dict(node) and dataclasses.is_dataclass(OmegaConf.get_type(node)):
            OmegaConf.to_object(node)


def require_rounds(strategy: StrategyContract, feature: str) -> None:
    """Refuse ``feature`` (e.g. ``privacy=dp_client``) with a strategy without synchronous rounds.

    Differential privacy and SecAgg+ act on one round's sample of updates: clipped, noised and
    accounted (or masked and summed) together; an asynchronous strategy folds updates as they
    arrive and has no such sample.
    """
    if not strategy.synchronous:
        raise ConfigError(
            f"{feature} needs synchronous rounds; {type(strategy).__name__} folds updates as "
            "they arrive, with no round sample to clip, noise and account (see README, "
            "Privacy): use a synchronous strategy or turn the feature off"
        )


def _check_checkpoint(cfg: DictConfig) -> None:
    """When resuming, that the run directory has a checkpoint (``checkpoint.every``: RunOptions)."""
    resume = cfg.get("resume")
    if resume and not (Path(str(resume)) / "checkpoint.npz").is_file():
        raise ConfigError(f"resume={resume}: no checkpoint.npz there (is it a run directory?)")


def check_text_pairing(cfg: DictConfig) -> None:
    """Pair text models and text data.

    A text model (one with a ``vocabulary``) needs a text dataset (one with a
    ``vocabulary_size``, or a table's ``text_column``), and a text dataset needs a text model.
    """
    text_model = "vocabulary" in cfg.model
    text_data = "vocabulary_size" in cfg.dataset or bool(cfg.dataset.get("text_column"))
    if text_model and not text_data:
        raise ConfigError(
            f"model={cfg.model._target_} reads sentences but dataset={cfg.dataset._target_} "
            "has none: use a text dataset (dataset=financial_news or dataset=text_hub), or name "
            "a table's text column (dataset.text_column=<name>)"
        )
    if text_data and not text_model:
        raise ConfigError(
            f"dataset={cfg.dataset._target_} holds sentences but model={cfg.model._target_} "
            "reads numbers: use model=text"
        )


def validate_compression(cfg: DictConfig) -> None:
    """Check the ``compression`` options and refuse unsound privacy/secagg combinations."""
    options = cfg.get("compression")
    if options is None:
        return
    up, _ = codecs_from_options(OmegaConf.to_container(options, resolve=True))  # type: ignore[arg-type]
    if up.name == "none":
        return
    for group, unsound in UNSOUND_WITH_UPDATE_COMPRESSION.items():
        name = cfg.get(group, {}).get("name", "none")
        if name in unsound:
            raise ConfigError(
                f"compression={up.name} cannot be combined with {group}={name}: {unsound[name]}; "
                f"use compression=none (compression.down may still encode the models)"
            )


def _options(cfg: DictConfig, group: str) -> dict[str, Any]:
    return OmegaConf.to_container(cfg[group], resolve=True)  # type: ignore[return-value]


def validate_privacy(cfg: DictConfig, strategy: StrategyContract) -> None:
    """Check the ``privacy`` group; refuse it with strategies it does not compose with."""
    options = build_options("privacy", _options(cfg, "privacy"), PRIVACY)
    if options.name == "none":
        return
    if strategy.combines_single_updates:
        raise ConfigError(
            f"privacy={options.name} cannot run with strategy={cfg.strategy.name}: the privacy "
            "wrapper hands the strategy the one noised mean of the clipped updates, so a robust "
            "rule would have nothing to select or trim; use strategy=fedavg or privacy=none"
        )
    require_rounds(strategy, f"privacy={options.name}")


def validate_secagg(cfg: DictConfig, strategy: StrategyContract) -> None:
    """Check the ``secagg`` group and refuse the combinations SecAgg+ cannot serve."""
    name = build_options("secagg", _options(cfg, "secagg"), SECAGG).name
    if name == "none":
        return
    privacy = cfg.get("privacy", {}).get("name", "none")
    if privacy not in SECURE_PRIVACY:
        raise ConfigError(
            f"secagg={name} cannot run with privacy={privacy}: the server sees only the sum, "
            f"so it cannot clip or check single updates (use privacy={' or '.join(SECURE_PRIVACY)})"
        )
    if privacy == "dp_client" and cfg.privacy.get("weight_cap") is not None:
        raise ConfigError(
            "secagg with privacy=dp_client sums unweighted updates: set privacy.weight_cap=null"
        )
    require_rounds(strategy, f"secagg={name}")
    if cfg.get("compression", {}).get("name", "none") != "none":
        raise ConfigError(f"secagg={name} cannot run with compression: SecAgg+ quantizes itself")
