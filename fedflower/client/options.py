"""Typed options of the ``client`` and ``attack`` config groups, with their value rules.

Hydra uses these dataclasses as the groups' schemas (registered in its ``ConfigStore`` by
:func:`register`), so it refuses unknown keys and values of the wrong type while composing;
the rules on values run when an option is built (``__post_init__``), with the message
``<key> must be <rule>, got <value>``. This module imports neither Flower nor TensorFlow: the
command line checks a config before those load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from fedflower.checks import check_choice, check_number
from fedflower.errors import ConfigError


@dataclass
class ClientOptions:
    """``conf/client/default.yaml``: local training, sent by the server every round."""

    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.01
    val_fraction: float = 0.2
    steps_per_execution: int = 1
    straggler_fraction: float = 0.0
    drop_stragglers: Optional[bool] = None  # noqa: UP045 (OmegaConf reads typing.Optional)
    optimizer: Any = field(default_factory=lambda: {"_target_": "keras.optimizers.Adam"})
    loss: Optional[str] = None  # noqa: UP045
    metrics: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Check the numbers of local training."""
        check_number("client.local_epochs", self.local_epochs, minimum=1, integer=True)
        check_number("client.batch_size", self.batch_size, minimum=1, integer=True)
        check_number("client.learning_rate", self.learning_rate, minimum=0.0, min_open=True)
        check_number("client.straggler_fraction", self.straggler_fraction, minimum=0.0, maximum=1.0)


ATTACKS = ("none", "sign_flip", "gaussian", "scale", "label_flip", "lie")
"""Simulated attacks (see :mod:`fedflower.client.attacks`)."""


@dataclass(unsafe_hash=True)
class Attack:
    """One attack's settings (``conf/attack/<name>.yaml``; see :mod:`fedflower.client.attacks`).

    Not frozen (OmegaConf makes a frozen dataclass's node read-only, and the YAML options set
    their values on it while composing) but hashable: a deployed client keeps one mod per attack.
    """

    name: str = "none"
    fraction: float = 0.0
    magnitude: float = 1.0
    factor: float = 10.0
    z: Optional[float] = None  # noqa: UP045
    seed: int = 0
    in_deployment: bool = False

    def __post_init__(self) -> None:
        """Check the attack's name and parameters; ``lie`` cannot run in a deployment."""
        check_choice("attack.name", self.name, ATTACKS)
        check_number("attack.fraction", self.fraction, minimum=0.0, maximum=1.0)
        check_number("attack.magnitude", self.magnitude, minimum=0.0)
        check_number("attack.factor", self.factor)
        check_number("attack.z", self.z, allow_none=True)
        check_choice("attack.in_deployment", self.in_deployment, (False, True))
        if self.in_deployment and self.name == "lie":
            raise ConfigError(
                "attack=lie cannot run in a deployment (attack.in_deployment=true): its colluders "
                "share their honest updates in one process; use sign_flip, gaussian, scale or "
                "label_flip, which a node makes alone"
            )

    @property
    def active(self) -> bool:
        """Whether any client attacks."""
        return self.name != "none" and self.fraction > 0


def register() -> None:
    """Store the dataclasses in Hydra's ``ConfigStore`` as their groups' schemas.

    ``conf/client/default.yaml`` names ``/schema/client/default@_here_`` in its defaults list,
    every ``conf/attack/<name>.yaml`` ``/schema/attack/attack@_here_``.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(group="schema/client", name="default", node=ClientOptions)
    store.store(group="schema/attack", name="attack", node=Attack)
