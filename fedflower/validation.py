"""Checks of a composed config that need neither TensorFlow nor Flower.

The CLI runs them right after composing the command line, so a bad value fails in about a
second with one line, before anything heavy is imported.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fedflower.checks import check_choice, check_number
from fedflower.server.tracking import check_tracking

BACKENDS = ("local", "ray")
"""Simulation backends (see :func:`fedflower.engine.simulate`)."""


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
    check_tracking(cfg.get("tracking"))
