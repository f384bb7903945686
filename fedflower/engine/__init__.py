"""Where clients run: the only package that knows simulation backends apart."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedflower.errors import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
"""Simulation backends (see :func:`simulate`)."""


class _NoRunSimulationNotice(logging.Filter):
    """Drops Flower's notice that ``run_simulation`` is deprecated.

    fedflower calls it for ``simulation=ray``; the user cannot act on the notice (``flwr run``
    is offered separately: ``make flwr-sim``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


@contextmanager
def quiet_flower_notices() -> Iterator[None]:
    """Run a block with Flower's ``run_simulation`` deprecation notice filtered out."""
    flower, notice = logging.getLogger("flwr"), _NoRunSimulationNotice()
    flower.addFilter(notice)
    try:
        yield
    finally:
        flower.removeFilter(notice)


def simulate(
    server_app: ServerApp,
    client_app: ClientApp,
    num_nodes: int,
    backend: str = "local",
    backend_config: dict[str, Any] | None = None,
    workers: int = 1,
    address: str | None = None,
    backends: Sequence[str] = (),
    threads: int | None = None,
    start_workers_after: float | None = None,
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
    workers : int
        ``local`` only: worker processes that run the clients (1: in this process; see
        :mod:`fedflower.engine.pool`).
    address : str, optional
        ``ray`` only: join the Ray cluster at this address instead of starting Ray (see
        :mod:`fedflower.engine.ray_cluster`).
    backends : sequence of str
        ``local`` only: Keras backends cycled over the clients (client ``i`` on
        ``backends[i % len(backends)]``), each in worker processes of its own (at least one
        per backend); empty: every client on this process's backend.
    threads : int, optional
        ``local`` only: CPU threads of each worker's backend; give this process's own
        (``simulation.tf_threads``) so that a client computes alike wherever it runs (the
        thread count can change a convolution's float32 sums). Default: an equal share of
        the cores.
    start_workers_after : float, optional
        ``local`` only: CPU seconds of client work in this process before the workers start
        (see :class:`~fedflower.engine.pool.PoolGrid`; default: 5 per worker).
    """
    if backend == "local":
        from fedflower.engine.local import run_local
        from fedflower.engine.pool import run_pool, worker_backends

        if workers == 1 and not backends:
            run_local(server_app, client_app, num_nodes)
        else:
            size = len(worker_backends(backends, workers))
            if threads is None:
                threads = max(1, len(os.sched_getaffinity(0)) // size)
            run_pool(
                server_app, client_app, num_nodes, size, threads, backends, start_workers_after
            )
    elif backend == "ray":
        from flwr.simulation import run_simulation

        from fedflower.engine.ray_cluster import cluster_backend_config
        from fedflower.startup import quiet_library_notices

        quiet_library_notices()  # after the import, which lets DeprecationWarnings through
        with quiet_flower_notices():
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_nodes,
                backend_config=cluster_backend_config(backend_config or {}, address),
            )
    else:
        raise ConfigError(f"simulation.backend={backend!r} is unknown; use one of {BACKENDS}")
