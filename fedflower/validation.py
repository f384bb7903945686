"""Checks of a composed config that need neither TensorFlow nor Flower.

The CLI runs them right after composing the command line, so a bad value fails in about a
second with one line, before anything heavy is imported.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from fedflower.aggregation.codecs import codecs_from_options
from fedflower.checks import check_choice, check_number
from fedflower.errors import ConfigError

BACKENDS = ("local", "ray")
"""Simulation backends (see :func:`fedflower.engine.simulate`)."""

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
    n = check_number("num_clients", cfg.num_clients, minimum=1, integer=True)
    check_number("num_rounds", cfg.num_rounds, minimum=1, integer=True)
    for key, value in cfg.strategy.items():
        key = str(key)
        if key.startswith("fraction_"):
            check_number(f"strategy.{key}", value, minimum=0.0, maximum=1.0)
        if key.startswith("min_") and key.endswith("_nodes"):
            check_number(f"strategy.{key}", value, minimum=0, maximum=n, integer=True)
    client = cfg.client
    check_number("client.local_epochs", client.local_epochs, minimum=1, integer=True)
    check_number("client.batch_size", client.batch_size, minimum=1, integer=True)
    check_number("client.learning_rate", client.learning_rate, minimum=0.0, min_open=True)
    stragglers = client.get("straggler_fraction", 0.0)
    check_number("client.straggler_fraction", stragglers, minimum=0.0, maximum=1.0)
    check_choice("simulation.backend", cfg.simulation.backend, BACKENDS)
    validate_compression(cfg)


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
