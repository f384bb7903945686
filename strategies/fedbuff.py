"""FedBuff: buffered asynchronous aggregation.

Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation", AISTATS 2022,
arXiv:2106.06639. Up to ``concurrency`` clients train at once, each from the newest global
model. A returning client's delta from the model version it started from goes into a buffer,
weighted by its number of examples and a staleness function ``s(tau)``; when the buffer holds
``buffer_size`` (K) updates the server moves the model by their weighted mean times a server
learning rate (optionally with server momentum) and bumps the version. The freed client slot
is refilled at once with the newest model. ``num_rounds`` counts server updates, so a run does
``K * num_rounds`` accepted client tasks.
"""

from __future__ import annotations

from typing import Any

from fedflower import aggregation
from fedflower.aggregation.staleness import FedBuffServer, delta
from fedflower.checks import check_choice, check_number
from fedflower.errors import ConfigError
from fedflower.server.async_strategy import Arrays, AsyncStrategy, ClientUpdate

SERVER_OPTIMIZERS: dict[str, type[aggregation.ServerOptimizer]] = {
    "sgd": aggregation.ServerSGD,
    "adam": aggregation.ServerAdam,
    "yogi": aggregation.ServerYogi,
    "adagrad": aggregation.ServerAdagrad,
}


def build_server_optimizer(spec: dict[str, Any]) -> aggregation.ServerOptimizer:
    """A server optimizer from ``{"name": sgd|adam|yogi|adagrad, **its parameters}``."""
    if not isinstance(spec, dict):
        raise ConfigError(f"server_optimizer must be null or a mapping with a name, got {spec!r}")
    check_choice("server_optimizer.name", spec.get("name"), SERVER_OPTIMIZERS)
    params = {k: v for k, v in spec.items() if k != "name"}
    try:
        return SERVER_OPTIMIZERS[spec["name"]](**params)
    except TypeError as exc:
        raise ConfigError(f"server_optimizer {spec['name']!r}: {exc}") from exc


class FedBuff(AsyncStrategy):
    """FedBuff: asynchronous, K-update buffered, staleness-weighted aggregation (arXiv:2106.06639).

    Parameters
    ----------
    concurrency : int
        Clients training at the same time.
    buffer_size : int
        K: accepted updates per server model update.
    server_lr : float
        Server learning rate on the buffer's mean delta (1 with constant staleness and
        ``K = concurrency`` = all clients reproduces one FedAvg round).
    server_momentum : float
        Heavy-ball momentum on the mean delta, in ``[0, 1)`` (0 = plain server SGD); uses
        :class:`fedflower.aggregation.ServerSGD` (FedAvgM's step).
    server_optimizer : mapping, optional
        Instead of ``server_lr``/``server_momentum``: a server optimizer of
        :mod:`fedflower.aggregation` applied to the buffer's mean delta, e.g.
        ``{"name": "adam", "eta": 0.01}`` (names: sgd, adam, yogi, adagrad).
    weighted : bool
        Weight deltas by the clients' numbers of examples (as FedAvg); ``False`` gives the
        paper's plain ``1/K`` mean.
    **options
        The shared asynchronous options of :class:`~fedflower.server.async_strategy.AsyncStrategy`
        (staleness, max_staleness, evaluate_every, seed, poll_interval, ...).
    """

    def __init__(
        self,
        concurrency: int = 10,
        buffer_size: int = 5,
        server_lr: float = 1.0,
        server_momentum: float = 0.0,
        server_optimizer: dict[str, Any] | None = None,
        weighted: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(concurrency=concurrency, **options)
        self.buffer_size = check_number(
            "strategy.buffer_size", buffer_size, minimum=1, integer=True
        )
        self.server_lr = float(check_number("server_lr", server_lr, minimum=0, min_open=True))
        self.server_momentum = float(
            check_number("server_momentum", server_momentum, minimum=0, maximum=1, max_open=True)
        )
        self.weighted = bool(weighted)
        self.server_optimizer = None if server_optimizer is None else dict(server_optimizer)
        if self.server_optimizer is not None:
            build_server_optimizer(self.server_optimizer)  # fail early on a bad spec
        self._server: FedBuffServer | None = None

    def reset(self, model: Arrays) -> None:
        """A fresh buffer and server step for the initial model."""
        self._server = self._make_server(model)

    def _make_server(self, model: Arrays) -> FedBuffServer:
        optimizer = None
        if self.server_optimizer is not None:
            optimizer = build_server_optimizer(self.server_optimizer)
        elif self.server_momentum > 0:
            optimizer = aggregation.ServerSGD(self.server_lr, self.server_momentum)
        return FedBuffServer(
            model, self.buffer_size, self.staleness, server_lr=self.server_lr, optimizer=optimizer
        )

    def state_dict(self) -> dict[str, Any]:
        """The shared asynchronous state and the FedBuff server's (buffer, optimizer moments)."""
        server = None if self._server is None else self._server.state_dict()
        return {**super().state_dict(), "server": server}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        if state["server"] is not None:
            self._server = self._make_server(self.model)
            self._server.load_state_dict(state["server"])

    def fold(self, update: ClientUpdate) -> Arrays | None:
        """Buffer the client's staleness-weighted delta; apply the buffer when it is full."""
        if self._server is None:
            self._server = self._make_server(self.model)
        server = self._server
        weight = update.weight if self.weighted else 1.0
        if server.add(delta(update.arrays, update.start), weight, update.staleness):
            return server.model
        return None

    def summary(self) -> None:
        """Log the strategy's settings."""
        super().summary()
        self._log_settings(
            buffer_size=self.buffer_size,
            server_lr=self.server_lr,
            server_momentum=self.server_momentum,
            server_optimizer=self.server_optimizer,
            weighted=self.weighted,
        )
