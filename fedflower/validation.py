"""Checks of a composed config that need neither TensorFlow nor Flower.

The CLI runs them right after composing the command line, so a bad value fails in about a
second with one line, before anything heavy is imported.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fedflower.errors import ConfigError

BACKENDS = ("local", "ray")
"""Simulation backends (see :func:`fedflower.engine.simulate`)."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: DictConfig) -> None:
    """Check the values a typo or a bad override can break, with one clear message each."""
    n = cfg.num_clients
    _check(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1,
        f"num_clients must be an integer >= 1, got {n!r}",
    )
    _check(
        isinstance(cfg.num_rounds, int) and cfg.num_rounds >= 1,
        f"num_rounds must be an integer >= 1, got {cfg.num_rounds!r}",
    )
    for key, value in cfg.strategy.items():
        key = str(key)
        if key.startswith("fraction_"):
            _check(
                isinstance(value, int | float) and 0.0 <= value <= 1.0,
                f"strategy.{key} must be in [0, 1], got {value!r}",
            )
        if key.startswith("min_") and key.endswith("_nodes"):
            _check(
                isinstance(value, int) and 0 <= value <= n,
                f"strategy.{key}={value!r} must be an integer in [0, num_clients={n}]",
            )
    client = cfg.client
    _check(
        isinstance(client.local_epochs, int) and client.local_epochs >= 1,
        f"client.local_epochs must be an integer >= 1, got {client.local_epochs!r}",
    )
    _check(
        isinstance(client.batch_size, int) and client.batch_size >= 1,
        f"client.batch_size must be an integer >= 1, got {client.batch_size!r}",
    )
    _check(
        isinstance(client.learning_rate, int | float) and client.learning_rate > 0,
        f"client.learning_rate must be a number > 0, got {client.learning_rate!r}",
    )
    stragglers = client.get("straggler_fraction", 0.0)
    _check(
        isinstance(stragglers, int | float) and 0.0 <= stragglers <= 1.0,
        f"client.straggler_fraction must be in [0, 1], got {stragglers!r}",
    )
    _check(
        cfg.simulation.backend in BACKENDS,
        f"simulation.backend must be one of {', '.join(BACKENDS)}, got {cfg.simulation.backend!r}",
    )
