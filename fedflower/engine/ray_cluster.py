"""Flower's Ray engine on an existing Ray cluster (``simulation=ray simulation.address=...``).

Flower's Ray backend starts a Ray instance of its own unless its ``init_args`` carry an
``address``; then ``ray.init`` joins that cluster as a driver and Flower's actors (one per
``client_resources`` share) are placed on every node the cluster has. A cluster is sized by
whoever started it (``ray start``), so the options that size a new instance are dropped: Ray
refuses them when it joins one.
"""

from __future__ import annotations

from typing import Any

from fedflower.errors import ConfigError

INIT_ARGS = "init_args"
CLUSTER_SIZED = ("num_cpus", "num_gpus", "resources", "labels", "object_store_memory")
"""``ray.init`` arguments that only a new Ray instance takes."""


def cluster_backend_config(backend_config: dict[str, Any], address: str | None) -> dict[str, Any]:
    """``backend_config`` with ``ray.init`` joining the cluster at ``address`` (``None``: as is).

    Parameters
    ----------
    backend_config : dict
        Flower's Ray ``backend_config`` (``client_resources``, ``init_args``).
    address : str or None
        ``host:port`` of the cluster's head node (the GCS port ``ray start --head`` prints),
        ``auto`` for the cluster this machine belongs to, or ``ray://host:port`` for Ray Client.
    """
    if address is None:
        return backend_config
    if not isinstance(address, str) or not (address == "auto" or ":" in address):
        raise ConfigError(
            f"simulation.address must be host:port, ray://host:port or auto, got {address!r}; "
            "use the address `ray start --head` printed, e.g. simulation.address=10.0.0.1:6379"
        )
    init = {k: v for k, v in backend_config.get(INIT_ARGS, {}).items() if k not in CLUSTER_SIZED}
    return {**backend_config, INIT_ARGS: {**init, "address": address}}
