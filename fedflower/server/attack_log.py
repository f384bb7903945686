"""Which nodes sent a simulated attack and which of them the aggregator left out.

A malicious client's reply carries an ``attack`` ConfigRecord (set by the attack mod,
:mod:`fedflower.client.attacks`, in simulation only). The strategy notes the flagged nodes of
each round and, when its rule selects whole updates (Krum, Multi-Krum, Bulyan), the nodes it
excluded; the metrics row of the round and ``results.json`` report them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import Message

from fedflower import keys


class AttackLog:
    """Malicious and excluded nodes of the current round, and their totals over the run."""

    def __init__(self) -> None:
        self.replied: list[int] = []
        self.malicious: list[int] = []
        self.excluded: list[int] | None = None
        self.malicious_updates = 0
        self.malicious_excluded = 0

    def start_round(self, replies: Iterable[Message]) -> None:
        """Note the nodes that replied with content and those whose reply is flagged."""
        ok = [m for m in replies if not m.has_error()]
        self.replied = sorted(m.metadata.src_node_id for m in ok)
        self.malicious = sorted(
            m.metadata.src_node_id for m in ok if keys.ATTACK in m.content.config_records
        )
        self.excluded = None
        self.malicious_updates += len(self.malicious)

    def select(self, selected: Iterable[int]) -> None:
        """Note the nodes whose updates the aggregator used: the other repliers are excluded."""
        chosen = set(selected)
        self.excluded = [n for n in self.replied if n not in chosen]
        self.malicious_excluded += len(set(self.excluded) & set(self.malicious))

    def round_report(self) -> dict[str, Any]:
        """Fields for the round's metrics row (none when nothing was flagged or selected)."""
        report: dict[str, Any] = {}
        if self.malicious:
            report["malicious_nodes"] = self.malicious
        if self.excluded is not None:
            report["excluded_nodes"] = self.excluded
            if self.malicious:
                report["malicious_excluded"] = len(set(self.excluded) & set(self.malicious))
        return report

    def run_report(self) -> dict[str, Any]:
        """Totals for ``results.json`` (empty when no attack ran)."""
        if not self.malicious_updates:
            return {}
        return {
            "attack": {
                "malicious_updates": self.malicious_updates,
                "malicious_excluded": self.malicious_excluded,
            }
        }
