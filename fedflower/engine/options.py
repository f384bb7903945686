"""The typed options of the ``simulation`` group: one dataclass per ``conf/simulation/*.yaml``.

Hydra uses them as the group's schemas (registered by :func:`fedflower.server.options.register`),
so it refuses unknown keys and values of the wrong type while composing; the rules on values
run when an option is built (``__post_init__``), with the message ``<key> must be <rule>, got
<value>``. This module imports neither Flower nor TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from fedflower.checks import check_number
from fedflower.errors import ConfigError


def check_workers(workers: Any) -> int:
    """``workers`` as a positive int, or a ``ConfigError`` saying how to fix it."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(
            f"simulation.workers must be a positive integer or auto, got {workers!r}; "
            "e.g. simulation.workers=2"
        )
    return workers


@dataclass
class LocalSimulation:
    """``simulation=local``: in-process virtual SuperNodes, and ``workers`` worker processes.

    ``workers`` is a positive integer or ``auto`` (the default: one per core, at most one per
    client training at once), so it is untyped here and checked in :meth:`__post_init__`.
    With more than one, clients run in this process until they have taken a few CPU seconds,
    then in worker processes started in the background (:mod:`fedflower.engine.pool`).
    """

    backend: str = "local"
    tf_threads: int = 1
    backend_config: dict[str, Any] = field(default_factory=dict)
    workers: Any = "auto"
    start_workers_after: Optional[float] = None  # noqa: UP045 (OmegaConf reads typing.Optional)
    backends: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Check the thread count, the worker count and when workers start."""
        check_number("simulation.tf_threads", self.tf_threads, minimum=0, integer=True)
        if self.workers != "auto":
            check_workers(self.workers)
        if self.start_workers_after is not None:
            check_number("simulation.start_workers_after", self.start_workers_after, minimum=0)


@dataclass
class RaySimulation:
    """``simulation=ray``: Flower's Ray engine, here or on a cluster at ``address``."""

    backend: str = "ray"
    tf_threads: int = 1
    backend_config: dict[str, Any] = field(default_factory=dict)
    address: Optional[str] = None  # noqa: UP045 (OmegaConf reads typing.Optional)
    backends: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Check the thread count."""
        check_number("simulation.tf_threads", self.tf_threads, minimum=0, integer=True)


SIMULATION: dict[str, type] = {"local": LocalSimulation, "ray": RaySimulation}
"""The ``simulation`` group's options: name -> typed options."""
