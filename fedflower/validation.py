"""Checks of a composed config that need neither TensorFlow nor Flower.

The CLI runs them right after composing the command line, so a bad value fails in about a
second with one line, before anything heavy is imported.
"""

from __future__ import annotations

from omegaconf import DictConfig

from fedflower.checks import check_choice, check_number
from fedflower.errors import ConfigError

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
    if "privacy" in cfg:
        validate_privacy(cfg)
    if "secagg" in cfg:
        validate_secagg(cfg)


PRIVACY_MODES = ("none", "dp_client", "dp_server", "dp_adaptive", "local_dp")
"""The ``privacy`` config group's options (see :mod:`fedflower.server.privacy`)."""

ASYNC_STRATEGIES = ("fedbuff", "fedasync")
"""Built-in strategies without synchronous rounds: no per-round sampling to account."""


def _positive(key: str, value: object, allow_none: bool = False) -> None:
    check_number(key, value, minimum=0.0, min_open=True, allow_none=allow_none)


def validate_privacy(cfg: DictConfig) -> None:
    """Check the ``privacy`` group; refuse it with strategies it does not compose with."""
    p = cfg.privacy
    name = check_choice("privacy.name", p.name, PRIVACY_MODES)
    if name == "none":
        return
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
