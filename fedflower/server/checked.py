"""What every Flower-derived fedflower strategy shares: checked, streamed aggregation.

Flower's ``FedAvg.aggregate_train`` is replaced by one that drops malformed updates (wrong
shapes, NaN, missing weight) with a one-line warning instead of failing the run, folds the
rest in a fixed order (by node id) so the result does not depend on arrival order, and
does the math in :mod:`fedflower.aggregation`. Strategies built on Flower's ``FedAvg``
subclasses (FedProx, FedOpt family) inherit it by listing :class:`CheckedFedAvg` after them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from fedflower import aggregation
from fedflower.checks import check_number
from fedflower.errors import UpdateRejected
from fedflower.server.attack_log import AttackLog
from fedflower.server.contract import StrategyContract
from fedflower.server.replies import unpack_reply

log = logging.getLogger(__name__)


class CheckedFedAvg(StrategyContract, FlowerFedAvg):
    """Flower's FedAvg with checked, order-independent, streamed aggregation.

    Its declarations to the run (synchronous rounds, stragglers dropped, ...) are those of
    :class:`~fedflower.server.contract.StrategyContract`; the minimum numbers of nodes are
    Flower's options.
    """

    _reference: list[np.ndarray] | None = None
    _reference_names: list[str] | None = None
    round_nodes: list[int] = []
    """Nodes whose updates :meth:`combine` gets this round, in the order it gets them."""
    rejected: int = 0
    """Failed replies and refused updates so far (counted by :meth:`accepted_updates`)."""
    _rejected_reported: int = 0
    _attack_log: AttackLog | None = None

    def __init__(self, **options: Any) -> None:
        for key in ("fraction_train", "fraction_evaluate"):
            if key in options:
                check_number(f"strategy.{key}", options[key], minimum=0.0, maximum=1.0)
        super().__init__(**options)

    def check_clients(self, num_clients: int) -> None:
        """Refuse minimum numbers of nodes that a federation of ``num_clients`` cannot meet."""
        minimums = {
            "min_train_nodes": self.min_train_nodes,
            "min_evaluate_nodes": self.min_evaluate_nodes,
            "min_available_nodes": self.min_available_nodes,
        }
        for key, value in minimums.items():
            check_number(f"strategy.{key}", value, minimum=0, maximum=num_clients, integer=True)

    @property
    def attack_log(self) -> AttackLog:
        """Malicious (attack-flagged) and excluded nodes of the round and the run."""
        if self._attack_log is None:
            self._attack_log = AttackLog()
        return self._attack_log

    def round_report(self) -> dict[str, Any]:
        """The round's malicious and excluded nodes (see :class:`AttackLog`), and ``rejected``.

        ``rejected`` (present when not 0) counts the round's failed replies and refused
        updates (malformed, non-finite, or refused by the client itself).
        """
        report = self.attack_log.round_report()
        if self.rejected > self._rejected_reported:
            report["rejected"] = self.rejected - self._rejected_reported
        self._rejected_reported = self.rejected
        return report

    def run_report(self) -> dict[str, Any]:
        """How many malicious updates arrived and how many were excluded."""
        return self.attack_log.run_report()

    def state_dict(self) -> dict[str, Any]:
        """Counters that carry over rounds (for a checkpoint)."""
        log_ = self.attack_log
        return {
            "rejected": self.rejected,
            "malicious": [log_.malicious_updates, log_.malicious_excluded],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.rejected = self._rejected_reported = int(state["rejected"])
        self.attack_log.malicious_updates, self.attack_log.malicious_excluded = state["malicious"]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global model the updates must match, then sample as Flower does."""
        self._reference = arrays.to_numpy_ndarrays()
        self._reference_names = list(arrays.keys())
        return super().configure_train(server_round, arrays, config, grid)

    def _unpack(self, reply: Message) -> tuple[list[str], list[np.ndarray], float]:
        return unpack_reply(
            reply,
            arrayrecord_key=self.arrayrecord_key,
            weighted_by_key=self.weighted_by_key,
            names=self._reference_names,
            reference=self._reference,
        )

    def accepted_updates(
        self, replies: Iterable[Message]
    ) -> list[tuple[Message, list[str], list[np.ndarray], float]]:
        """Unpack the replies that carry a well-formed update; warn about the others."""
        accepted = []
        for reply in sorted(replies, key=lambda m: m.metadata.src_node_id):
            node = reply.metadata.src_node_id
            if reply.has_error():
                self.rejected += 1
                log.warning("node %s failed: %s", node, reply.error.reason)
                continue
            try:
                accepted.append((reply, *self._unpack(reply)))
            except UpdateRejected as exc:
                self.rejected += 1
                log.warning("update from node %s rejected: %s", node, exc)
        return accepted

    def combine(self, updates: list[tuple[list[np.ndarray], float]]) -> list[np.ndarray]:
        """The new global model from the accepted ``(arrays, weight)`` updates.

        The one hook an aggregation rule overrides (FedSGD's step, a server optimizer, a
        trimmed mean); :meth:`aggregate_train` does the checking, naming and metrics around it.
        Raising ``UpdateRejected`` keeps the global model for this round.
        """
        return aggregation.weighted_mean(updates)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """:meth:`combine` the accepted updates (by default their example-weighted mean)."""
        replies = list(replies)
        self.attack_log.start_round(replies)
        accepted = self.accepted_updates(replies)
        if not accepted:
            return None, None
        self.round_nodes = [reply.metadata.src_node_id for reply, *_ in accepted]
        try:
            new = self.combine([(arrays, w) for _, _, arrays, w in accepted])
        except UpdateRejected as exc:
            log.warning("round %s: global model kept: %s", server_round, exc)
            return None, None
        names = self._reference_names or accepted[0][1]
        arrays = ArrayRecord({k: Array(a) for k, a in zip(names, new, strict=True)})
        metrics = self.train_metrics_aggr_fn(
            [reply.content for reply, *_ in accepted], self.weighted_by_key
        )
        return arrays, metrics
