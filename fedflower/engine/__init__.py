"""Where clients run: the only package that knows simulation backends apart."""

from __future__ import annotations

import logging
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedflower.errors import ConfigError
from fedflower.validation import BACKENDS

log = logging.getLogger(__name__)


def simulate(
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    backend: str = "local",
    backend_config: dict[str, Any] | None = None,
) -> None:
    """Run a federation of ``num_nodes`` virtual SuperNodes.

    Parameters
    ----------
    server_app, client_app : ServerApp, ClientApp
        The apps to run (the same ones a deployment runs).
    num_nodes : int
        Number of virtual SuperNodes.
    backend : {"local", "ray"}
        ``local`` runs clients in this process (fast, deterministic); ``ray`` uses Flower's
        simulation engine with Ray workers (clients in parallel processes).
    backend_config : dict, optional
        Passed to Flower's engine as its ``backend_config`` (``ray`` only).
    """
    if backend == "local":
        from fedflower.engine.local import run_local

        run_local(server_app, client_app, num_nodes)
    elif backend == "ray":
        from flwr.simulation import run_simulation

        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_nodes,
            backend_config=backend_config or {},
        )
    else:
        raise ConfigError(f"simulation.backend={backend!r} is unknown; use one of {BACKENDS}")
