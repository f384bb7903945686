"""FedAsync: asynchronous federated optimization with staleness-weighted mixing.

Xie, Koyejo and Gupta, "Asynchronous Federated Optimization", 2019, arXiv:1903.03934. Up to
``concurrency`` clients train at once; every returning client immediately updates the global
model ``x <- (1 - alpha_t) x + alpha_t x_client`` with ``alpha_t = alpha * s(tau)``, where
``tau`` is the number of server versions since the client started and ``s`` a staleness
function (constant, polynomial or hinge). ``num_rounds`` counts server updates, one per
accepted client task.
"""

from __future__ import annotations

from typing import Any

from fedflower.aggregation.staleness import mix
from fedflower.checks import check_number
from fedflower.server.async_strategy import Arrays, AsyncStrategy, ClientUpdate


class FedAsync(AsyncStrategy):
    """FedAsync: mix each arriving client model in with weight alpha * s(tau) (arXiv:1903.03934).

    Parameters
    ----------
    concurrency : int
        Clients training at the same time.
    alpha : float
        Mixing weight of a fresh update, in ``(0, 1]``.
    **options
        The shared asynchronous options of :class:`~fedflower.server.async_strategy.AsyncStrategy`
        (staleness, max_staleness, evaluate_every, seed, poll_interval, ...).
    """

    def __init__(
        self,
        concurrency: int = 10,
        alpha: float = 0.6,
        **options: Any,
    ) -> None:
        super().__init__(concurrency=concurrency, **options)
        self.alpha = float(check_number("alpha", alpha, minimum=0, maximum=1, min_open=True))

    def fold(self, update: ClientUpdate) -> Arrays | None:
        """Mix the client's model into the global one with weight ``alpha * s(tau)``."""
        return mix(self.model, update.arrays, self.alpha * self.staleness(update.staleness))

    def summary(self) -> None:
        """Log the strategy's settings."""
        super().summary()
        self._log_settings(alpha=self.alpha)
