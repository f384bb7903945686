"""Secure aggregation: Flower's SecAgg+ protocol driven from a Message-API strategy.

SecAgg+ (Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS
2020, eprint 2020/704; Bonawitz et al., arXiv:1611.04482) lets the server learn only the sum of
the clients' quantized, masked vectors. Flower 1.42 ships it only in its legacy workflow API
(``flwr.server.workflow.SecAggPlusWorkflow``, run by ``DefaultWorkflow`` with a legacy
``flwr.server.strategy.Strategy``). :class:`SecureRound` runs that workflow for one
round of a Message-API strategy: a small legacy strategy hands it the train messages the
strategy configured (as ``FitIns``) and receives the unmasked weighted mean. The four message
exchanges of the protocol (setup, share keys, collect masked vectors, unmask) go through the
same grid as any round, so metering counts their bytes. No cryptography is written here.

Dropouts: a node that stops answering in one of the stages is left out of the later ones.
One lost before it shared its keys (setup, share keys) takes no part in the round; one lost
after (while training, or in the unmask stage) had its masks removed through its
neighbours' secret shares, which works while every node has at least
``reconstruction_threshold`` live neighbours (with ``num_shares=1.0``: that many of the
sampled nodes still answering). The round's sum is then the survivors' weighted mean.
With fewer, the workflow halts and the round is skipped
(model unchanged) with one logged line; on a grid with round deadlines
(:class:`~fedflower.server.deadline.DeadlineGrid`) the four stages are one round, so the lost
node is recorded once and the skipped round counts once toward ``max_failed_rounds``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import (
    FitIns,
    FitRes,
    Parameters,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid

from fedflower import keys
from fedflower.server.deadline import RoundJudge

log = logging.getLogger(__name__)

SECAGG_OPTIONS = (
    "num_shares",
    "reconstruction_threshold",
    "max_weight",
    "clipping_range",
    "quantization_range",
    "modulus_range",
)
"""Options of Flower's ``SecAggPlusWorkflow`` the ``secagg`` config group sets."""


class SecureResult:
    """What one SecAgg+ round reveals: the weighted mean and the clients' metrics."""

    def __init__(self, mean: list[np.ndarray], contents: list[RecordDict]) -> None:
        self.mean = mean
        self.contents = contents

    @property
    def count(self) -> int:
        """Number of clients whose masked vectors were summed."""
        return len(self.contents)


class _Instructions(LegacyStrategy):
    """A legacy strategy that hands the workflow fixed FitIns and keeps what it aggregated."""

    def __init__(self, fitins: list[tuple[ClientProxy, FitIns]]) -> None:
        self.fitins = fitins
        self.result: SecureResult | None = None

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return self.fitins

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[Any],
    ) -> tuple[Parameters | None, dict[str, Any]]:
        if not results:
            return None, {}
        mean = parameters_to_ndarrays(results[0][1].parameters)  # every result holds the sum
        contents = [
            RecordDict({keys.METRICS: MetricRecord({**res.metrics})})  # type: ignore[dict-item]
            for _, res in results
        ]
        self.result = SecureResult(mean, contents)
        return None, {}

    def configure_evaluate(self, *args: Any) -> list[Any]:
        return []

    def aggregate_evaluate(self, *args: Any) -> tuple[None, dict[str, Any]]:
        return None, {}

    def evaluate(self, *args: Any) -> None:
        return None


class _Workflow(SecAggPlusWorkflow):
    """Flower's workflow, keeping its last round's protocol state; early dropouts left out.

    A node that answers neither the setup nor the share-keys stage never gave its
    neighbours key shares, and they add no pairwise mask with it (a client masks with the
    nodes whose shares it received). The protocol's surviving set after sharing keys (``U2``
    in Bonawitz et al., arXiv:1611.04482) is the round's; Flower 1.42 keeps such a node
    among the sampled ones and then halts in the unmask stage for want of its shares, so one
    node lost between two rounds would cost a round. :meth:`share_keys_stage` drops it from
    the sampled nodes and from every neighbourhood, and checks the threshold on the rest.
    """

    state: WorkflowState | None = None

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        self.state = state  # one object, updated in place by every later stage
        return super().setup_stage(grid, context, state)

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        super().share_keys_stage(grid, context, state)
        gone = state.sampled_node_ids - state.active_node_ids
        state.sampled_node_ids = set(state.active_node_ids)
        for neighbours in state.nid_to_neighbours.values():
            neighbours -= gone
        return self._check_threshold(state)


class SecureRound:
    """One training round through Flower's ``SecAggPlusWorkflow``.

    Parameters
    ----------
    options : dict
        ``SecAggPlusWorkflow``'s options (:data:`SECAGG_OPTIONS`).
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self.workflow = _Workflow(**{k: options[k] for k in SECAGG_OPTIONS if k in options})
        self.quantization_step = 2 * self.workflow.clipping_range / self.workflow.quantization_range

    def run(
        self, grid: Grid, messages: list[Message], server_round: int, arrays: ArrayRecord
    ) -> SecureResult | None:
        """Send ``messages``' instructions through SecAgg+; the unmasked mean, or ``None``."""
        run_id = grid.run.run_id if hasattr(grid, "run") else 0
        fitins = []
        for message in messages:
            config = message.content.config_records.get(keys.CONFIG, ConfigRecord())
            record = message.content.array_records[keys.ARRAYS]
            weights = record.to_numpy_ndarrays()
            proxy = GridClientProxy(message.metadata.dst_node_id, grid, run_id)
            names = "\n".join(record.keys())  # a legacy config holds scalars, not lists
            settings: dict[str, Any] = {**config, keys.ARRAY_NAMES: names}
            fitins.append((proxy, FitIns(ndarrays_to_parameters(weights), settings)))
        if len(fitins) < 2:
            reason = f"SecAgg+ needs 2 or more clients, got {len(fitins)}"
            return self._halted(grid, server_round, reason)
        strategy = _Instructions(fitins)  # type: ignore[arg-type]
        state = RecordDict(
            {
                MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round}),
                MAIN_PARAMS_RECORD: arrays,
            }
        )
        context = LegacyContext(
            Context(run_id=run_id, node_id=0, node_config={}, state=state, run_config={}),
            strategy=strategy,
        )
        self.workflow.state = None
        self.workflow(grid, context)
        return self._outcome(grid, server_round, len(fitins), strategy.result)

    def _outcome(
        self, grid: Grid, server_round: int, sampled: int, result: SecureResult | None
    ) -> SecureResult | None:
        """Say what the dropouts cost: survivors summed, or the round skipped and why."""
        state = self.workflow.state
        if state is None:
            return result
        if result is not None:
            if result.count < sampled:
                log.warning(
                    "round %s: SecAgg+ summed the updates of %d of %d sampled nodes",
                    server_round, result.count, sampled,
                )  # fmt: skip
            return result
        answered = len(state.active_node_ids)
        reason = (
            f"SecAgg+ halted: {answered} of {sampled} nodes answered every stage, and every "
            f"node needs {state.threshold} of its {state.num_shares} key shares held by live "
            "nodes (secagg.reconstruction_threshold)"
        )
        return self._halted(grid, server_round, reason)

    @staticmethod
    def _halted(grid: Grid, server_round: int, reason: str) -> None:
        """Skip the round (model unchanged) with one line; a deadline grid counts it."""
        line = f"train round {server_round} skipped (model unchanged): {reason}"
        if isinstance(grid, RoundJudge):
            grid.fail_round(str(server_round), line)
        else:
            log.warning("%s", line)
