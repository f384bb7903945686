"""Checks of a composed config that need no TensorFlow.

The CLI runs them right after composing the command line, before Hydra creates the run
directory, so a bad value fails in about a second with one line and writes nothing. Only the
latency model's check imports Flower (it builds the model, whose classes live in
``fedflower.engine``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fedflower.aggregation.codecs import codecs_from_options
from fedflower.checks import check_choice, check_number
from fedflower.errors import ConfigError

BACKENDS = ("local", "ray")
"""Simulation backends (see :func:`fedflower.engine.simulate`)."""
ATTACKS = ("none", "sign_flip", "gaussian", "scale", "label_flip", "lie")
"""Simulated attacks (see :mod:`fedflower.client.attacks`)."""

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
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{missing[0]} must be set, got nothing: add {missing[0]}=... to the command line "
            "(e.g. dataset=csv dataset.path=data.csv, model=keras_file model.path=model.keras)"
        )
    check_number("seed", cfg.seed, minimum=0, integer=True)
    n = check_number("num_clients", cfg.num_clients, minimum=1, integer=True)
    check_number("num_rounds", cfg.num_rounds, minimum=1, integer=True)
    for key, value in cfg.strategy.items():
        key = str(key)
        if key.startswith("fraction_"):
            check_number(f"strategy.{key}", value, minimum=0.0, maximum=1.0)
        if key.startswith("min_") and key.endswith("_nodes"):
            check_number(f"strategy.{key}", value, minimum=0, maximum=n, integer=True)
    _check_robust(cfg.strategy, n)
    _check_strategy_numbers(cfg.strategy)
    client = cfg.client
    check_number("client.local_epochs", client.local_epochs, minimum=1, integer=True)
    check_number("client.batch_size", client.batch_size, minimum=1, integer=True)
    check_number("client.learning_rate", client.learning_rate, minimum=0.0, min_open=True)
    stragglers = client.get("straggler_fraction", 0.0)
    check_number("client.straggler_fraction", stragglers, minimum=0.0, maximum=1.0)
    check_choice("simulation.backend", cfg.simulation.backend, BACKENDS)
    _check_attack(cfg.get("attack") or {})
    _check_checkpoint(cfg)
    check_text_pairing(cfg)
    check_tracking(cfg.get("tracking"))
    validate_compression(cfg)
    if "privacy" in cfg:
        validate_privacy(cfg)
    if "secagg" in cfg:
        validate_secagg(cfg)


def _check_robust(strategy: DictConfig, num_clients: int) -> None:
    """Options of the robust aggregators (Krum, Multi-Krum, Bulyan, trimmed mean)."""
    if "num_malicious_nodes" in strategy:
        check_number(
            "strategy.num_malicious_nodes",
            strategy.num_malicious_nodes,
            minimum=0,
            maximum=num_clients - 1,
            integer=True,
        )
    if "num_nodes_to_select" in strategy:
        # more than the updates received averages them all (as Flower's Multi-Krum)
        check_number(
            "strategy.num_nodes_to_select", strategy.num_nodes_to_select, minimum=1, integer=True
        )
    if "beta" in strategy:
        check_number("strategy.beta", strategy.beta, minimum=0.0, maximum=0.5, max_open=True)


def _check_attack(attack: Any) -> None:
    """The ``attack`` group's name and parameters."""
    check_choice("attack.name", attack.get("name", "none"), ATTACKS)
    check_number("attack.fraction", attack.get("fraction", 0.0), minimum=0.0, maximum=1.0)
    check_number("attack.magnitude", attack.get("magnitude", 1.0), minimum=0.0)
    check_number("attack.factor", attack.get("factor", 1.0))
    check_number("attack.z", attack.get("z"), allow_none=True)
    in_deployment = check_choice(
        "attack.in_deployment", attack.get("in_deployment", False), (False, True)
    )
    if in_deployment and attack.get("name") == "lie":
        raise ConfigError(
            "attack=lie cannot run in a deployment (attack.in_deployment=true): its colluders "
            "share their honest updates in one process; use sign_flip, gaussian, scale or "
            "label_flip, which a node makes alone"
        )


def _check_strategy_numbers(strategy: DictConfig) -> None:
    """Options whose bad value would otherwise fail only once the server runs (or never)."""
    if "proximal_mu" in strategy:
        check_number("strategy.proximal_mu", strategy.proximal_mu, minimum=0.0)
    for key in ("buffer_size", "concurrency", "evaluate_every"):
        if key in strategy:
            check_number(f"strategy.{key}", strategy[key], minimum=1, integer=True)


def _check_checkpoint(cfg: DictConfig) -> None:
    """``checkpoint.every`` and, when resuming, that the run directory has a checkpoint."""
    check_number(
        "checkpoint.every", cfg.get("checkpoint", {}).get("every", 0), minimum=0, integer=True
    )
    resume = cfg.get("resume")
    if resume and not (Path(str(resume)) / "checkpoint.npz").is_file():
        raise ConfigError(f"resume={resume}: no checkpoint.npz there (is it a run directory?)")


def check_text_pairing(cfg: DictConfig) -> None:
    """Pair text models and text data.

    A text model (one with a ``vocabulary``) needs a text dataset (one with a
    ``vocabulary_size``), and a text dataset needs a text model.
    """
    text_model = "vocabulary" in cfg.model
    text_data = "vocabulary_size" in cfg.dataset
    if text_model and not text_data:
        raise ConfigError(
            f"model={cfg.model._target_} reads sentences but dataset={cfg.dataset._target_} "
            "has none: use a text dataset (dataset=financial_news or dataset=text_hub)"
        )
    if text_data and not text_model:
        raise ConfigError(
            f"dataset={cfg.dataset._target_} holds sentences but model={cfg.model._target_} "
            "reads numbers: use model=text"
        )


TRACKERS = ("none", "wandb")
"""Experiment trackers besides TensorBoard (see :mod:`fedflower.server.tracking`)."""
WANDB_MODES = ("offline", "online", "disabled")


def check_tracking(tracking: Mapping[str, Any] | None) -> str:
    """Check ``cfg.tracking`` without importing a tracker; return the tracker's name.

    Run by :func:`fedflower.validation.validate`, so a bad mode or a missing ``wandb`` package
    stops the run before TensorFlow is imported.
    """
    options = tracking or {}
    name = check_choice("tracking.name", options.get("name", "none"), TRACKERS)
    if name == "wandb":
        check_choice("tracking.mode", options.get("mode", "offline"), WANDB_MODES)
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError(
                "tracking=wandb needs the wandb package: pip install 'fedflower[wandb]'"
            )
    return str(name)


def validate_compression(cfg: DictConfig) -> None:
    """Check the ``compression`` options and refuse unsound privacy/secagg combinations."""
    options = cfg.get("compression")
    if options is None:
        return
    up, _ = codecs_from_options(OmegaConf.to_container(options, resolve=True))  # type: ignore[arg-type]
    check_choice("compression.error_feedback", options.get("error_feedback", False), (False, True))
    if up.name == "none":
        return
    for group, unsound in UNSOUND_WITH_UPDATE_COMPRESSION.items():
        name = cfg.get(group, {}).get("name", "none")
        if name in unsound:
            raise ConfigError(
                f"compression={up.name} cannot be combined with {group}={name}: {unsound[name]}; "
                f"use compression=none (compression.down may still encode the models)"
            )


PRIVACY_MODES = ("none", "dp_client", "dp_server", "dp_adaptive", "local_dp")
"""The ``privacy`` config group's options (see :mod:`fedflower.server.privacy`)."""

ASYNC_STRATEGIES = ("fedbuff", "fedasync")
ROBUST_STRATEGIES = ("krum", "multikrum", "bulyan", "fedmedian", "fedtrimmedavg")
"""Built-in strategies that select or trim single updates: DP hands them only the noised mean."""
"""Built-in strategies without synchronous rounds: no per-round sampling to account."""


def _positive(key: str, value: object, allow_none: bool = False) -> None:
    check_number(key, value, minimum=0.0, min_open=True, allow_none=allow_none)


def validate_privacy(cfg: DictConfig) -> None:
    """Check the ``privacy`` group; refuse it with strategies it does not compose with."""
    p = cfg.privacy
    name = check_choice("privacy.name", p.name, PRIVACY_MODES)
    if name == "none":
        return
    if cfg.strategy.name in ROBUST_STRATEGIES:
        raise ConfigError(
            f"privacy={name} cannot run with strategy={cfg.strategy.name}: the privacy wrapper "
            "hands the strategy the one noised mean of the clipped updates, so a robust rule "
            "would have nothing to select or trim; use strategy=fedavg or privacy=none"
        )
    if cfg.strategy.name in ASYNC_STRATEGIES:
        raise ConfigError(
            f"privacy={name} needs synchronous rounds; strategy={cfg.strategy.name} folds "
            "updates as they arrive, with no round sample to clip, noise and account "
            "(see README, Privacy): use a synchronous strategy or privacy=none"
        )
    check_number(
        "privacy.target_delta",
        p.target_delta,
        minimum=0.0,
        maximum=1.0,
        min_open=True,
        max_open=True,
    )
    _positive("privacy.max_epsilon", p.get("max_epsilon"), allow_none=True)
    if (
        check_choice("privacy.sampling", p.get("sampling", "fixed"), ("fixed", "poisson"))
        == "poisson"
    ):
        check_number(
            "privacy.sampling_rate", p.sampling_rate, minimum=0.0, maximum=1.0, min_open=True
        )
    _positive("privacy.weight_cap", p.get("weight_cap"), allow_none=True)
    if name == "local_dp":
        _positive("privacy.local_epsilon", p.local_epsilon)
        check_number(
            "privacy.local_delta",
            p.local_delta,
            minimum=0.0,
            maximum=1.0,
            min_open=True,
            max_open=True,
        )
    else:
        _positive("privacy.noise_multiplier", p.noise_multiplier)
    if name == "dp_adaptive":
        _positive("privacy.initial_clipping_norm", p.initial_clipping_norm)
        check_number(
            "privacy.target_clipped_quantile", p.target_clipped_quantile, minimum=0.0, maximum=1.0
        )
        _positive("privacy.clip_norm_lr", p.clip_norm_lr)
        _positive("privacy.clipped_count_stddev", p.get("clipped_count_stddev"), allow_none=True)
    else:
        _positive("privacy.clipping_norm", p.clipping_norm)


SECURE_PRIVACY = ("none", "dp_client")
"""Privacy modes that compose with SecAgg+: the server must not need to see single updates."""

SECAGG_MODES = ("none", "secaggplus")
"""The ``secagg`` config group's options (see :mod:`fedflower.server.secagg`)."""


def validate_secagg(cfg: DictConfig) -> None:
    """Check the ``secagg`` group and refuse the combinations SecAgg+ cannot serve."""
    name = check_choice("secagg.name", cfg.secagg.name, SECAGG_MODES)
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
    if cfg.strategy.name in ASYNC_STRATEGIES:
        raise ConfigError(
            f"secagg={name} needs synchronous rounds; strategy={cfg.strategy.name} has none"
        )
    if cfg.get("compression", {}).get("name", "none") != "none":
        raise ConfigError(f"secagg={name} cannot run with compression: SecAgg+ quantizes itself")
    check_number("secagg.clipping_range", cfg.secagg.clipping_range, minimum=0.0, min_open=True)
    check_number("secagg.max_weight", cfg.secagg.max_weight, minimum=0.0, min_open=True)
