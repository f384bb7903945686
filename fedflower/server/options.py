"""The typed options of the server's config groups, and their registration with Hydra.

The ``privacy`` and ``secagg`` options are defined here; the ``compression``, ``latency`` and
``tracking`` and ``simulation`` options next to the code they configure
(:mod:`fedflower.aggregation.codecs`, :mod:`fedflower.engine.latency`,
:mod:`fedflower.outputs.tracking`, :mod:`fedflower.engine.options`).
One dataclass per option of each group (``conf/<group>/<name>.yaml``).
Hydra uses them as the groups' schemas (registered in its ``ConfigStore`` by
:func:`register`), so it refuses unknown keys and values of the wrong type
while composing; the rules on values (ranges, choices) run when an option is built
(``__post_init__``), with the message ``<key> must be <rule>, got <value>``. This module
imports neither Flower nor TensorFlow: the command line checks a config before those load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from omegaconf import II, MISSING

from fedflower.aggregation.codecs import CODECS, CompressionOptions
from fedflower.checks import check_choice, check_number
from fedflower.engine.latency import LatencyOptions, NoLatency
from fedflower.engine.options import SIMULATION
from fedflower.errors import ConfigError
from fedflower.outputs.tracking import NoTracking


def _positive(key: str, value: object, allow_none: bool = False) -> None:
    check_number(key, value, minimum=0.0, min_open=True, allow_none=allow_none)


def _probability(key: str, value: object) -> None:
    check_number(key, value, minimum=0.0, maximum=1.0, min_open=True, max_open=True)


@dataclass
class NoPrivacy:
    """``privacy=none``: updates are averaged as they are."""

    name: str = "none"


@dataclass
class CentralPrivacy:
    """Options every DP mode shares: the reported delta, the budget, the client sampling."""

    name: str = "dp_server"
    target_delta: float = 1e-5
    max_epsilon: Optional[float] = None  # noqa: UP045 (OmegaConf reads typing.Optional)
    sampling: str = "fixed"
    sampling_rate: float = 0.1
    weight_cap: Optional[float] = None  # noqa: UP045

    def __post_init__(self) -> None:
        """Check the shared options."""
        _probability("privacy.target_delta", self.target_delta)
        _positive("privacy.max_epsilon", self.max_epsilon, allow_none=True)
        if check_choice("privacy.sampling", self.sampling, ("fixed", "poisson")) == "poisson":
            check_number(
                "privacy.sampling_rate", self.sampling_rate, minimum=0.0, maximum=1.0, min_open=True
            )
        _positive("privacy.weight_cap", self.weight_cap, allow_none=True)


@dataclass
class ServerClipping(CentralPrivacy):
    """``privacy=dp_server``: the server clips each update to ``clipping_norm`` and adds noise."""

    name: str = "dp_server"
    noise_multiplier: float = 1.0
    clipping_norm: float = 1.0

    def __post_init__(self) -> None:
        """Check the noise multiplier and the clipping norm."""
        super().__post_init__()
        _positive("privacy.noise_multiplier", self.noise_multiplier)
        _positive("privacy.clipping_norm", self.clipping_norm)


@dataclass
class ClientClipping(ServerClipping):
    """``privacy=dp_client``: clients clip their own update; the server adds noise."""

    name: str = "dp_client"


@dataclass
class AdaptiveClipping(CentralPrivacy):
    """``privacy=dp_adaptive``: a clipping norm that follows a quantile (arXiv:1905.03871)."""

    name: str = "dp_adaptive"
    noise_multiplier: float = 1.0
    initial_clipping_norm: float = 0.1
    target_clipped_quantile: float = 0.5
    clip_norm_lr: float = 0.2
    clipped_count_stddev: Optional[float] = None  # noqa: UP045

    def __post_init__(self) -> None:
        """Check the noise multiplier and the adaptive clipping's options."""
        super().__post_init__()
        _positive("privacy.noise_multiplier", self.noise_multiplier)
        _positive("privacy.initial_clipping_norm", self.initial_clipping_norm)
        check_number(
            "privacy.target_clipped_quantile",
            self.target_clipped_quantile,
            minimum=0.0,
            maximum=1.0,
        )
        _positive("privacy.clip_norm_lr", self.clip_norm_lr)
        _positive("privacy.clipped_count_stddev", self.clipped_count_stddev, allow_none=True)


@dataclass
class LocalPrivacy(CentralPrivacy):
    """``privacy=local_dp``: every client clips and noises its own update (Flower's LocalDpMod)."""

    name: str = "local_dp"
    clipping_norm: float = 1.0
    local_epsilon: float = 10.0
    local_delta: float = 1e-5

    def __post_init__(self) -> None:
        """Check the clipping norm and the per-release (epsilon, delta)."""
        super().__post_init__()
        _positive("privacy.local_epsilon", self.local_epsilon)
        _probability("privacy.local_delta", self.local_delta)
        _positive("privacy.clipping_norm", self.clipping_norm)


@dataclass
class NoSecAgg:
    """``secagg=none``: the server sees each update."""

    name: str = "none"


@dataclass
class SecAggPlus:
    """``secagg=secaggplus``: Flower's SecAgg+ workflow; the server learns only the sum.

    ``num_shares`` and ``reconstruction_threshold`` keep Flower's meaning of their type (a
    float is a fraction of the sampled clients, an integer a count), so they are untyped here.
    """

    name: str = "secaggplus"
    num_shares: Any = 1.0
    reconstruction_threshold: Any = 0.67
    max_weight: float = 1000.0
    clipping_range: float = 8.0
    quantization_range: int = 4194304
    modulus_range: int = 4294967296

    def __post_init__(self) -> None:
        """Check the clipping range and the weight cap."""
        _positive("secagg.clipping_range", self.clipping_range)
        _positive("secagg.max_weight", self.max_weight)


@dataclass
class StrategyOptions:
    """What every option of the ``strategy`` group has: the plugin's name and the run's deadline.

    The deadline keys (``round_timeout``, ``max_failed_rounds``, ``wait_timeout``: see
    :class:`fedflower.server.deadline.DeadlineOptions`) are read by the server, not by the
    plugin; ``null`` leaves each to its default (``+strategy.round_timeout=60`` sets one).
    A plugin's schema subclasses :class:`SamplingOptions` or :class:`AsyncOptions` (or this
    class) and adds its constructor's options; the value rules stay in the constructor.
    """

    name: str = MISSING
    round_timeout: Optional[float] = None  # noqa: UP045 (OmegaConf reads typing.Optional)
    max_failed_rounds: Optional[int] = None  # noqa: UP045
    wait_timeout: Optional[float] = None  # noqa: UP045


@dataclass
class SamplingOptions(StrategyOptions):
    """Client sampling of Flower's ``FedAvg`` (``conf/strategy/fedavg.yaml``), shared by the
    synchronous strategies built on :class:`~fedflower.server.checked.CheckedFedAvg`.
    """

    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_train_nodes: int = 1
    min_evaluate_nodes: int = 1
    min_available_nodes: int = II("num_clients")


@dataclass
class AsyncOptions(StrategyOptions):
    """The options every asynchronous strategy shares
    (:class:`~fedflower.server.async_strategy.AsyncStrategy`).
    """

    concurrency: int = 10
    staleness: Any = "constant"  # a name or a mapping {name: polynomial, a: 0.5}
    max_staleness: Optional[int] = None  # noqa: UP045
    evaluate_every: int = 1
    task_timeout: Optional[float] = None  # noqa: UP045
    seed: int = II("seed")


PRIVACY: dict[str, type] = {
    "none": NoPrivacy,
    "dp_server": ServerClipping,
    "dp_client": ClientClipping,
    "dp_adaptive": AdaptiveClipping,
    "local_dp": LocalPrivacy,
}
"""The ``privacy`` group's options: name -> typed options."""
SECAGG: dict[str, type] = {"none": NoSecAgg, "secaggplus": SecAggPlus}
"""The ``secagg`` group's options: name -> typed options."""


def build_options(group: str, options: Mapping[str, Any], kinds: Mapping[str, type]) -> Any:
    """The typed options of ``group`` (``privacy``, ``secagg``) named by ``options["name"]``."""
    name = check_choice(f"{group}.name", options.get("name", "none"), list(kinds))
    try:
        return kinds[name](**options)
    except TypeError as exc:
        raise ConfigError(f"{group}={name}: {exc}") from exc


COMPRESSION: dict[str, type] = dict.fromkeys(CODECS, CompressionOptions)
"""The ``compression`` group's options: every codec shares one set of options."""
LATENCY: dict[str, type] = {
    "none": NoLatency,
    **dict.fromkeys(("constant", "uniform", "lognormal", "pareto"), LatencyOptions),
}
"""The ``latency`` group's options (the slowdown distributions share one schema)."""
TRACKING: dict[str, type] = {"none": NoTracking}
"""The ``tracking`` group's typed options; ``tracking=wandb`` stays open for ``wandb.init``
arguments (see :class:`fedflower.outputs.tracking.WandbTracking`)."""


@dataclass
class CheckpointOptions:
    """``checkpoint``: how often the run writes ``checkpoint.npz`` (0 = never)."""

    every: int = 1


@dataclass
class OutputOptions:
    """``output``: what the run directory gets besides its metrics."""

    save_model: bool = True
    plots: bool = True


@dataclass
class RunOptions:
    """The run's own keys at the top level of ``conf/config.yaml`` (the groups type themselves).

    Hydra cannot type a primary config's root (it merges its own ``hydra`` node first), so
    :func:`fedflower.server.rules.validate` builds this from the composed keys before anything
    else: a wrong type (``num_rounds=five``) and a bad value (``num_rounds=0``) are one line
    each. The groups interpolate ``seed`` and ``num_clients``, hence this order.
    """

    num_clients: int = 10
    num_rounds: int = 10
    seed: int = 0
    backend: str = "tensorflow"
    verbose: bool = False
    progress: bool = True
    baseline: str = "none"
    resume: Optional[str] = None  # noqa: UP045
    checkpoint: CheckpointOptions = field(default_factory=CheckpointOptions)
    output: OutputOptions = field(default_factory=OutputOptions)

    def __post_init__(self) -> None:
        """Check the run-level numbers."""
        check_number("seed", self.seed, minimum=0, integer=True)
        check_number("num_clients", self.num_clients, minimum=1, integer=True)
        check_number("num_rounds", self.num_rounds, minimum=1, integer=True)
        check_number("checkpoint.every", self.checkpoint.every, minimum=0, integer=True)


def run_options(cfg: Mapping[str, Any]) -> RunOptions:
    """The typed run-level keys of a composed config, or a ``ConfigError`` (one line)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    from fedflower.startup import type_error_line

    keys = {f.name: cfg[f.name] for f in fields(RunOptions) if f.name in cfg}
    run = {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in keys.items()
    }
    try:
        typed = OmegaConf.merge(OmegaConf.structured(RunOptions), run)
    except ValidationError as exc:
        raise ConfigError(type_error_line(exc)) from None
    return OmegaConf.to_object(typed)  # type: ignore[return-value]


SCHEMA_GROUP = "schema"
"""Where the schemas sit in Hydra's ``ConfigStore``: ``schema/<group>/<option>``, named in the
defaults list of ``conf/<group>/<option>.yaml`` as ``/schema/<group>/<option>@_here_``."""


def register() -> None:
    """Store every option's dataclass in Hydra's ``ConfigStore`` as its YAML file's schema.

    Called by fedflower's Hydra search-path plugin (``hydra_plugins.fedflower_searchpath``)
    whenever Hydra starts for fedflower, so every composition (the CLI, the compose API,
    ``flwr run``) types these groups.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    from fedflower.server.registry import schemas

    for group, kinds in (
        ("strategy", schemas()),
        ("privacy", PRIVACY),
        ("secagg", SECAGG),
        ("compression", COMPRESSION),
        ("latency", LATENCY),
        ("tracking", TRACKING),
        ("simulation", SIMULATION),
    ):
        for name, node in kinds.items():
            store.store(group=f"{SCHEMA_GROUP}/{group}", name=name, node=node)
