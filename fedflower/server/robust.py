"""Byzantine-robust aggregation rules on top of checked aggregation.

A robust strategy plugin lists :class:`RobustAggregation` before one of Flower's robust
strategies (``Krum``, ``MultiKrum``, ``Bulyan``, ``FedMedian``, ``FedTrimmedAvg``), which
provides the options (``num_malicious_nodes``, ``num_nodes_to_select``, ``beta``) and the
summary. Updates are first checked and ordered by :class:`~fedflower.server.checked.CheckedFedAvg`
(malformed ones dropped); the rule then combines the accepted ones with Flower's own
functions (``select_multikrum``, ``aggregate_n_closest_weights``, ``trim_mean``,
``aggregate_median``). Too few accepted updates for the rule's guarantee keeps the global model
for the round with one warning; a configuration that can never get enough fails before the
first round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy.multikrum import select_multikrum

from fedflower import keys
from fedflower.aggregation import cast_like, weighted_mean
from fedflower.checks import check_number
from fedflower.errors import ConfigError, UpdateRejected
from fedflower.server.checked import CheckedFedAvg

Update = tuple[list[np.ndarray], float]


SelectionRule = Callable[[list[RecordDict], int, int], list[RecordDict]]


def selection(
    updates: Sequence[Update],
    num_malicious: int,
    num_select: int,
    rule: SelectionRule = select_multikrum,
) -> list[int]:
    """Indices of the updates a Flower selection rule keeps (by default Multi-Krum's).

    The rule sees each update as a reply's content, as in Flower's own strategies.
    """
    contents = [RecordDict({keys.ARRAYS: ArrayRecord(arrays)}) for arrays, _ in updates]
    position = {id(c): i for i, c in enumerate(contents)}
    return [position[id(c)] for c in rule(contents, num_malicious, num_select)]


class RobustAggregation(CheckedFedAvg):
    """Checked aggregation with a robust :meth:`robust_combine` and a minimum number of updates.

    A subclass sets :attr:`rule` (its name in messages), overrides :meth:`required_updates`
    when its guarantee needs more than one update and :meth:`robust_combine`; a rule that
    selects whole updates reports them through :meth:`select` (recorded per round with the
    malicious nodes among the excluded).
    """

    rule = "robust aggregation"
    combines_single_updates = True

    def check_clients(self, num_clients: int) -> None:
        """Also refuse tolerating as many malicious clients as there are clients."""
        super().check_clients(num_clients)
        check_number(
            "strategy.num_malicious_nodes",
            self.num_malicious_nodes,
            minimum=0,
            maximum=num_clients - 1,
            integer=True,
        )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        n = self.num_malicious_nodes
        check_number("strategy.num_malicious_nodes", n, minimum=0, integer=True)
        if hasattr(self, "num_nodes_to_select"):
            k = self.num_nodes_to_select
            check_number("strategy.num_nodes_to_select", k, minimum=1, integer=True)

    def required_updates(self) -> tuple[int, str]:
        """The fewest accepted updates the rule combines, and the rule's formula for it."""
        return 1, "1"

    def robust_combine(self, updates: list[Update]) -> list[np.ndarray]:
        """The new global model from at least :meth:`required_updates` accepted updates."""
        raise NotImplementedError

    def select(self, updates: list[Update], chosen: Sequence[int]) -> list[Update]:
        """Record which nodes' updates the rule chose; return those updates."""
        self.attack_log.select(self.round_nodes[i] for i in chosen)
        return [updates[i] for i in chosen]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Refuse a federation too small for the rule, then sample as Flower does."""
        available = len(list(grid.get_node_ids()))
        sampled = max(int(available * self.fraction_train), self.min_train_nodes)
        need, formula = self.required_updates()
        if min(sampled, available) < need:
            raise ConfigError(
                f"{self.rule} needs at least {formula} = {need} updates per round but "
                f"samples {min(sampled, available)} of {available} clients; raise num_clients or "
                f"strategy.fraction_train, or lower strategy.num_malicious_nodes"
            )
        return super().configure_train(server_round, arrays, config, grid)

    def combine(self, updates: list[Update]) -> list[np.ndarray]:
        """Check there are enough updates, then :meth:`robust_combine` them."""
        need, formula = self.required_updates()
        if len(updates) < need:
            raise UpdateRejected(
                f"{self.rule} needs at least {formula} = {need} accepted updates, "
                f"got {len(updates)}"
            )
        result = self.robust_combine(updates)
        return cast_like(result, self._reference or updates[0][0])

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Checked aggregation (not the Flower base's), with :meth:`combine` above."""
        return CheckedFedAvg.aggregate_train(self, server_round, replies)


class KrumRule(RobustAggregation):
    """Multi-Krum (Krum when one update is selected): the weighted mean of the selected."""

    num_malicious_nodes: int
    num_nodes_to_select: int

    def required_updates(self) -> tuple[int, str]:
        """Krum's guarantee needs ``n >= 2f + 3`` (Blanchard et al. 2017)."""
        return 2 * self.num_malicious_nodes + 3, "2*num_malicious_nodes+3"

    def robust_combine(self, updates: list[Update]) -> list[np.ndarray]:
        """Example-weighted mean of the updates with the lowest Krum scores."""
        chosen = selection(updates, self.num_malicious_nodes, self.num_nodes_to_select)
        return weighted_mean(self.select(updates, chosen))
