"""Checks of a composed config that need no TensorFlow.

The CLI runs them right after composing the command line, before Hydra creates the run
directory, so a bad value fails in about a second with one line and writes nothing. Only the
latency model's check imports Flower (it builds the model, whose classes live in
``fedflower.engine``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fedflower.checks import check_choice, check_number
from fedflower.errors import ConfigError

BACKENDS = ("local", "ray")
ATTACKS = ("none", "sign_flip", "gaussian", "scale", "label_flip", "lie")
"""Simulated attacks (see :mod:`fedflower.client.attacks`)."""
"""Simulation backends (see :func:`fedflower.engine.simulate`)."""


def validate(cfg: DictConfig) -> None:
    """Check the values a typo or a bad override can break, with one clear message each."""
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
    _check_latency(cfg.get("latency"))
    _check_checkpoint(cfg)


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


def _check_strategy_numbers(strategy: DictConfig) -> None:
    """Options whose bad value would otherwise fail only once the server runs (or never)."""
    if "proximal_mu" in strategy:
        check_number("strategy.proximal_mu", strategy.proximal_mu, minimum=0.0)
    for key in ("buffer_size", "concurrency", "evaluate_every"):
        if key in strategy:
            check_number(f"strategy.{key}", strategy[key], minimum=1, integer=True)


def _check_latency(latency: Any) -> None:
    """Build the latency model once, so that its bad parameters fail before any output.

    Imports Flower (not TensorFlow): about a second, only when a latency model is set.
    """
    if latency is None or "_target_" not in latency:
        return
    from fedflower.engine.clock import build_latency

    build_latency(latency)


def _check_checkpoint(cfg: DictConfig) -> None:
    """``checkpoint.every`` and, when resuming, that the run directory has a checkpoint."""
    check_number(
        "checkpoint.every", cfg.get("checkpoint", {}).get("every", 0), minimum=0, integer=True
    )
    resume = cfg.get("resume")
    if resume and not (Path(str(resume)) / "checkpoint.npz").is_file():
        raise ConfigError(f"resume={resume}: no checkpoint.npz there (is it a run directory?)")
