"""The run's wrappers, listed in one object built in one place.

Around the engine's grid and the strategy plugin a run stacks, from the engine outwards:

1. the virtual clock (:class:`~fedflower.engine.clock.VirtualClockGrid`, simulation with a
   latency model) — times each task;
2. the meter (:class:`~fedflower.engine.metered.MeteredGrid`) — counts the bytes of the
   messages as they cross (asking the clock, when there is one, for the sizes it saw);
3. compression (:class:`~fedflower.server.compression.CompressedGrid`) — encodes models and
   decodes updates outside the meter, so the bytes counted are the compressed ones;
4. stragglers (:class:`~fedflower.engine.stragglers.StragglerGrid`) — cuts or drops the
   work of a seeded fraction of the clients;

and around the strategy, the differential-privacy / SecAgg+ release
(:func:`~fedflower.server.privacy.make_private`). :class:`Pipeline` names each of them, so
reports (:class:`~fedflower.engine.wrapper.Reports`) and checkpoint state
(:class:`~fedflower.engine.wrapper.Stateful`) are gathered from a list, not found by walking
``.inner`` or ``.strategy`` chains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flwr.serverapp import Grid

from fedflower.engine.clock import VirtualClockGrid
from fedflower.engine.latency import LatencyModel
from fedflower.engine.metered import MeteredGrid
from fedflower.engine.stragglers import straggler_grid
from fedflower.engine.wrapper import Reports, Stateful
from fedflower.outputs.per_client import PerClientLog
from fedflower.server.async_strategy import AsyncStrategy
from fedflower.server.compression import compressed_grid
from fedflower.server.contract import StrategyContract
from fedflower.server.per_client import PerClientGrid, engine_namer


@dataclass
class Pipeline:
    """One run's grid wrappers (engine outwards) and strategy layers (outermost first).

    Attributes
    ----------
    clock : VirtualClockGrid or None
        The virtual clock (simulation with a latency model); ``None``: the wall clock.
    meter : MeteredGrid
        Counts the bytes of every message.
    compression : Grid or None
        Encodes models, decodes updates (``None`` without compression).
    grid : Grid
        What the strategy talks to (the outermost wrapper).
    strategies : list of StrategyContract
        The strategy as the loop runs it, then each strategy it wraps (a privacy release,
        then the plugin).
    """

    clock: VirtualClockGrid | None
    meter: MeteredGrid
    compression: Grid | None
    grid: Grid
    strategies: list[StrategyContract]
    per_client: PerClientGrid | None = None
    engine: Grid | None = None
    deadline: Reports | None = None

    @property
    def strategy(self) -> StrategyContract:
        """The strategy the loop runs (the outermost layer)."""
        return self.strategies[0]

    @property
    def direct_clock(self) -> bool:
        """Whether the strategy's messages reach the virtual clock through the meter only.

        Then an asynchronous run's tasks in flight can be re-issued identically on resume;
        compression and stragglers keep state of their own.
        """
        return self.clock is not None and self.grid is self.meter

    def reporters(self) -> list[Reports]:
        """Who contributes fields to a row, in the order of the row's columns."""
        found: list[Any] = [
            self.clock,
            self.compression,
            self.meter,
            self.per_client,
            self.deadline,
            self.strategy,
        ]
        return [r for r in found if isinstance(r, Reports)]

    def round_report(self) -> dict[str, Any]:
        """The extra fields of a metrics row (virtual time, compression, the strategy's)."""
        extra: dict[str, Any] = {}
        for reporter in self.reporters():
            extra.update(reporter.round_report())
        return extra

    def run_report(self) -> dict[str, Any]:
        """The totals for ``results.json`` (final virtual time, the strategy's totals)."""
        extra: dict[str, Any] = {}
        for reporter in self.reporters():
            extra.update(reporter.run_report())
        return extra

    def stateful(self, **others: Any) -> dict[str, Stateful]:
        """The objects a checkpoint keeps, by name: strategy layers, ``others``, meter, clock."""
        found: dict[str, Any] = {f"strategy{i}": s for i, s in enumerate(self.strategies)}
        log = None if self.per_client is None else self.per_client.log
        # the engine holds the clients' Context.state (personal models) when it runs them
        found.update(others, meter=self.meter, clock=self.clock, per_client=log, nodes=self.engine)
        return {k: v for k, v in found.items() if isinstance(v, Stateful)}


def build_pipeline(
    grid: Grid,
    strategy: StrategyContract,
    *,
    latency: LatencyModel | None,
    compression: dict[str, Any] | None,
    client_options: dict[str, Any],
    seed: int,
    outer: StrategyContract | None = None,
    per_client: PerClientLog | None = None,
) -> Pipeline:
    """Stack a run's wrappers around the engine's ``grid`` and the plugin ``strategy``.

    ``latency`` gives the run a virtual clock (simulation only); ``compression`` is the
    config group's options; ``client_options`` decide the stragglers
    (``client.straggler_fraction``, seeded by ``seed``); ``outer`` is the strategy the loop
    runs when it wraps the plugin (differential privacy, SecAgg+); ``per_client`` receives each
    client's federated evaluation (synchronous strategies; outside the meter, it reads only
    what crossed it).
    """
    clock = None if latency is None else VirtualClockGrid(grid, latency)
    meter = MeteredGrid(grid if clock is None else clock)
    wire = compressed_grid(meter, compression, seed)
    outer = strategy if outer is None else outer
    strategies = [outer] if outer is strategy else [outer, strategy]
    readers = None
    if per_client is not None and not isinstance(strategy, AsyncStrategy):
        readers = PerClientGrid(wire, per_client, engine_namer(grid))
    return Pipeline(
        clock=clock,
        meter=meter,
        compression=None if wire is meter else wire,
        grid=straggler_grid(wire if readers is None else readers, client_options, outer, seed),
        strategies=strategies,
        per_client=readers,
        engine=grid,
    )
