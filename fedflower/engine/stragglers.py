"""Systems heterogeneity: stragglers that finish only part of their local work.

Li et al., "Federated Optimization in Heterogeneous Networks" (FedProx), MLSys 2020,
arXiv:1812.06127, section 5.2: each round a fraction of the selected devices are stragglers that
run only a random number of local epochs in ``[1, E]``. FedAvg drops them (the server does not
wait for them, so their work is lost); FedProx keeps their partial solutions.

:class:`StragglerGrid` wraps the server's ``Grid``: for every training round it marks a seeded
random subset of the selected clients and rewrites their instruction to fewer local epochs, or
(when the strategy drops stragglers) does not send it at all, so no time is spent on work that
would be discarded. The subset depends only on the run's seed and the round, so strategies
compared with the same seed see the same stragglers (as in the paper's code).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedflower import keys
from fedflower.checks import check_number
from fedflower.determinism import derive_seed
from fedflower.engine.wrapper import DropsStragglers, GridWrapper

log = logging.getLogger(__name__)

STREAM = 0x57A6
"""Mixed into the seed so straggler draws are independent of other seeded choices."""


@dataclass(frozen=True)
class StragglerPlan:
    """One round's stragglers and the epochs each of them runs."""

    round: int
    epochs: dict[int, int]

    @property
    def nodes(self) -> list[int]:
        """The stragglers' node ids."""
        return sorted(self.epochs)


def plan_round(
    seed: int, server_round: int, node_ids: Sequence[int], fraction: float, local_epochs: int
) -> StragglerPlan:
    """Choose this round's stragglers among the selected ``node_ids``.

    As in the paper's code, ``round(n * (1 - fraction))`` of the ``n`` selected clients run the
    full ``local_epochs``; the others are stragglers, each drawing its epochs uniformly from
    ``[1, local_epochs]``. The draw depends only on ``seed``, ``server_round`` and the set of
    selected nodes (not their order).
    """
    nodes = sorted(int(n) for n in node_ids)
    num_full = round(len(nodes) * (1.0 - fraction))
    rng = np.random.default_rng(derive_seed(seed, server_round, STREAM))
    chosen = rng.permutation(len(nodes))[: len(nodes) - num_full]
    epochs = rng.integers(1, max(1, local_epochs), size=len(chosen), endpoint=True)
    return StragglerPlan(
        server_round, {nodes[i]: int(e) for i, e in zip(sorted(chosen), epochs, strict=True)}
    )


def _with_epochs(message: Message, epochs: int, config_key: str) -> Message:
    """A copy of a train instruction that asks for ``epochs`` local epochs (content not shared)."""
    content = message.content
    config = ConfigRecord(
        {**content.config_records[config_key], keys.LOCAL_EPOCHS: epochs, keys.STRAGGLER: True}
    )
    new = RecordDict({name: record for name, record in content.items() if name != config_key})
    new[config_key] = config
    meta = message.metadata
    return Message(new, meta.dst_node_id, meta.message_type, ttl=meta.ttl, group_id=meta.group_id)


class StragglerGrid(GridWrapper):
    """Delegate to ``grid``; turn a seeded share of each training round's clients into stragglers.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The grid to wrap (e.g. the metered grid).
    fraction : float
        Share of each round's selected clients that straggle, in [0, 1].
    drop : bool
        Discard the stragglers (FedAvg in the paper) instead of keeping their partial work.
    seed : int
        The run's seed.
    config_key : str
        Name of the ConfigRecord in train instructions.
    """

    def __init__(
        self,
        grid: Grid,
        fraction: float,
        drop: bool,
        seed: int,
        config_key: str = keys.CONFIG,
    ) -> None:
        super().__init__(grid)
        self.fraction = float(
            check_number("client.straggler_fraction", fraction, minimum=0.0, maximum=1.0)
        )
        self.drop = bool(drop)
        self.seed = int(seed)
        self.config_key = config_key
        self.plans: list[StragglerPlan] = []
        self._train_pushes = 0

    def _round_of(self, message: Message) -> int:
        config = message.content.config_records.get(self.config_key, ConfigRecord())
        value = config.get(keys.SERVER_ROUND)
        return int(value) if value is not None else self._train_pushes  # type: ignore[arg-type]

    def straggle(self, messages: Iterable[Message]) -> list[Message]:
        """Apply this round's straggler plan to the train instructions among ``messages``."""
        messages = list(messages)
        train = [m for m in messages if m.metadata.message_type == MessageType.TRAIN]
        if not train or self.fraction == 0.0:
            return messages
        self._train_pushes += 1
        config = train[0].content.config_records.get(self.config_key, ConfigRecord())
        local_epochs = int(config.get(keys.LOCAL_EPOCHS, 1))  # type: ignore[arg-type]
        plan = plan_round(
            self.seed,
            self._round_of(train[0]),
            [m.metadata.dst_node_id for m in train],
            self.fraction,
            local_epochs,
        )
        self.plans.append(plan)
        log.debug("round %s stragglers (drop=%s): %s", plan.round, self.drop, plan.epochs)
        out = []
        for m in messages:
            epochs = plan.epochs.get(m.metadata.dst_node_id)
            if m.metadata.message_type != MessageType.TRAIN or epochs is None:
                out.append(m)
            elif not self.drop:
                out.append(_with_epochs(m, epochs, self.config_key))
        return out

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self.inner.push_messages(self.straggle(messages))

    def send_and_receive(  # noqa: D102
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.inner.send_and_receive(self.straggle(messages), timeout=timeout)


def straggler_grid(
    grid: Grid, client_options: dict[str, Any], strategy: DropsStragglers, seed: int
) -> Grid:
    """Wrap ``grid`` in a :class:`StragglerGrid` when ``client.straggler_fraction > 0``.

    ``client.drop_stragglers`` decides whether stragglers are dropped; when it is unset
    (``null``) the strategy decides: its ``drops_stragglers`` (``True`` unless the strategy
    says otherwise; FedProx keeps them; see :class:`fedflower.server.contract.StrategyContract`).
    """
    fraction = client_options.get("straggler_fraction", 0.0) or 0.0
    if fraction == 0.0:
        return grid
    drop = client_options.get("drop_stragglers")
    if drop is None:
        drop = strategy.drops_stragglers
    if not drop and int(client_options.get("local_epochs", 1)) == 1:
        log.warning(
            "client.straggler_fraction=%s does nothing: stragglers keep their work and run a "
            "random number of epochs in [1, client.local_epochs] = [1, 1]; set "
            "client.local_epochs >= 2 (the FedProx paper uses 20) or client.drop_stragglers=true",
            fraction,
        )
    return StragglerGrid(grid, fraction, bool(drop), seed)
