"""Asynchronous strategies on Flower: the server loop FedBuff and FedAsync share.

Flower's ``Strategy.start`` runs synchronous rounds: every sampled client must reply before
the model moves, so each round lasts as long as its slowest client. :class:`AsyncStrategy`
overrides ``start`` with an event loop instead (FedBuff, Nguyen et al. 2022, arXiv:2106.06639;
FedAsync, Xie et al. 2019, arXiv:1903.03934), run by an :class:`AsyncLoop` whose named
transitions are the steps below; its clock is injected (the pipeline's virtual clock in
simulation, the wall clock otherwise):

1. keep ``concurrency`` clients training at once (``grid.push_messages``), each from the newest
   model; a :class:`~fedflower.server.tasks.TaskTable` remembers each task's node, start
   version and deadline;
2. take the replies of the tasks that finished at the current time (``grid.pull_messages``),
   and for each compute its staleness ``tau`` (server versions since it started), drop it if
   ``tau > max_staleness``, else fold it into the server model through the subclass's
   :meth:`AsyncStrategy.fold`;
3. when the fold moved the model, bump the version, aggregate the folded updates' train
   metrics and call ``evaluate_fn(version, arrays)`` every ``evaluate_every`` versions;
4. once *all* replies of that instant are received, refill the freed slots with the newest
   model. (Refilling a slot before the other replies of the same instant are folded would
   start it from a model about to be replaced; with this order FedBuff with ``K`` =
   ``concurrency`` = all clients and equal client durations is FedAvg in every round.)

``num_rounds`` counts *server model updates* (versions), not client tasks: FedBuff with buffer
size ``K`` runs ``K * num_rounds`` accepted client tasks, FedAsync one per update.

What "the next finished task" means comes from a :class:`~fedflower.engine.clock.Clock`: in
simulation the grid is a :class:`~fedflower.engine.clock.VirtualClockGrid` and replies come in
order of their virtual finish time (deterministic for a seed); with any other grid (a real
deployment) replies are folded in arrival order and the wall clock is used, and nodes that
connect later are given work. On both clocks a task still without a reply ``task_timeout``
seconds after dispatch is abandoned (checked at every event: on the virtual clock, when the
clock next moves), its slot refilled and its node counted as failed, as a killed SuperNode
would be. A node whose task failed (error reply, malformed update, deadline passed) gets new
work only after another node's reply has been accepted, so a client that crashes at once
cannot spin the loop; when every node has failed since the last accepted reply, the run stops.
Failed tasks and rejected updates together are the strategy's :attr:`AsyncStrategy.rejected`
(``rejected_updates`` in ``results.json``), as in the synchronous
:class:`~fedflower.server.checked.CheckedFedAvg`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from fedflower import keys
from fedflower.aggregation.staleness import StalenessFn, make_staleness
from fedflower.checks import check_number
from fedflower.engine.clock import Clock, ReplayableClock, WallClock
from fedflower.errors import ConfigError, UpdateRejected
from fedflower.records import aggregate_metricrecords
from fedflower.server.checkpoint import Checkpointer
from fedflower.server.contract import StrategyContract
from fedflower.server.replies import unpack_reply
from fedflower.server.tasks import Task, TaskTable

log = logging.getLogger(__name__)

Arrays = list[np.ndarray]
MetricsAggr = Callable[[list[RecordDict], str], MetricRecord]
EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]
ROUNDLESS = "{} has no rounds: it runs its own event loop, start(grid, initial_arrays, ...)"


@dataclass
class ClientUpdate:
    """One client's accepted reply, ready to be folded into the server model.

    Attributes
    ----------
    node_id : int
        The node that trained.
    arrays : list of ndarray
        Its trained weights.
    start : list of ndarray
        The global model (version ``start_version``) it trained from.
    start_version : int
        The server version it started from.
    staleness : int
        Server versions made since it started (``tau``).
    weight : float
        Its aggregation weight (its number of training examples).
    content : RecordDict
        The reply's content (for its metrics).
    """

    node_id: int
    arrays: Arrays
    start: Arrays
    start_version: int
    staleness: int
    weight: float
    content: RecordDict


@dataclass
class AsyncLoop:
    """One run of the event loop: its state, and the transitions between two events.

    :meth:`AsyncStrategy.start` builds it; :meth:`run` repeats :meth:`dispatch` (fill free
    slots), :meth:`receive` (every reply of this instant, folded in order, each fold that
    moves the model an :meth:`advance`), :meth:`expire` (tasks past their deadline) and a
    wait on the injected ``clock`` until the last version, with :meth:`idle` when nothing is
    in flight and :meth:`save` between two events. The server state (model, version, task
    table, counters) stays the strategy's, which a checkpoint keeps.
    """

    strategy: AsyncStrategy
    grid: Grid
    clock: Clock
    wall: bool
    num_rounds: int
    timeout: float
    task_timeout: float
    train_config: ConfigRecord
    evaluate_fn: EvaluateFn | None = None
    checkpoint: Checkpointer | None = None
    saved: int = 0
    result: Result = field(default_factory=Result)
    idle_since: float | None = None

    def run(self, initial_arrays: ArrayRecord) -> Result:
        """Evaluate version 0 (unless resumed), then run events until the last version."""
        t_start = time.time()
        if self.evaluate_fn is not None and not self.saved:
            res = self.evaluate_fn(0, initial_arrays)
            if res is not None:
                self.result.evaluate_metrics_serverapp[0] = res
        table = self.strategy.table
        while self.strategy.version < self.num_rounds:
            self.dispatch()
            if not table:
                if self.idle():
                    break
                continue
            self.idle_since = None
            replies = list(self.grid.pull_messages(list(table.tasks)))
            # every reply of this instant is received before a freed slot is refilled
            self.receive(replies)
            self.expire()
            if not replies:
                self.clock.wait(list(table.tasks), self.timeout)
            self.save()
        self.save(last=True)
        return self.finish(t_start)

    def resume(self, checkpoint: Checkpointer) -> None:
        """Checkpoint the run; when resuming, load the state and re-issue the tasks in flight."""
        if not isinstance(self.clock, ReplayableClock):
            raise ConfigError(
                "an asynchronous run is checkpointed and resumed only in simulation, on the "
                "virtual clock (latency model) with only the meter between it and the strategy"
            )
        self.checkpoint = checkpoint
        if not checkpoint.resume:
            return
        s, table = self.strategy, self.strategy.table
        self.saved, _ = checkpoint.restore(s._names)
        s._record = None
        moved = list(table.tasks.items())  # in dispatch order
        messages = [
            m
            for _, task in moved
            for m in s._train_messages(
                [task.node_id], self.train_config, task.version, table.models[task.version]
            )
        ]
        self.clock.replay([i for i, _ in moved])
        ids = list(self.grid.push_messages(messages))
        table.rename(dict(zip([i for i, _ in moved], ids, strict=True)))
        log.info("resumed after server version %s; %s tasks re-issued", self.saved, len(ids))

    def save(self, last: bool = False) -> None:
        """Write a checkpoint when a multiple of ``checkpoint.every`` versions was passed."""
        version = self.strategy.version
        if self.checkpoint is None or self.saved == version:
            return
        if last or self.checkpoint.due(version, self.saved):
            self.checkpoint.save(version, self.strategy._current_record(), last=True)
            self.saved = version

    def dispatch(self) -> None:
        """Fill the free slots with tasks for random idle nodes, from the newest model."""
        s = self.strategy
        chosen = s.table.pick(self.grid.get_node_ids())
        if not chosen:
            return
        ids = list(self.grid.push_messages(s._train_messages(chosen, self.train_config)))
        s.table.dispatch(ids, chosen, s.version, s.model, self.clock.now, self.task_timeout)
        s.totals["tasks"] += len(ids)
        s._report["tasks"] = s.totals["tasks"]

    def idle(self) -> bool:
        """Nothing in flight and no node to give work to: wait for one, or say why to stop."""
        version = self.strategy.version
        if self.strategy.table.all_resting(self.grid.get_node_ids()):
            log.error(
                "every node failed since the last accepted update; stopping at version %s",
                version,
            )
            return True
        if not self.wall:
            log.error("no node is available for training; stopping at %s", version)
            return True
        self.idle_since = self.clock.now if self.idle_since is None else self.idle_since
        if self.clock.now - self.idle_since > self.timeout:
            log.error("no node connected for %.0f s; stopping", self.timeout)
            return True
        self.clock.wait([], self.timeout)
        return False

    def receive(self, replies: list[Message]) -> None:
        """Fold the replies in order; stop once the last version is made."""
        s = self.strategy
        for reply in replies:
            released = s.table.release(reply.metadata.reply_to_message_id)
            if released is None:
                continue
            task, start = released
            outcome, update = s._accept(reply, task, start, self.clock.now)
            s._count(outcome)
            if outcome in ("failed", "rejected"):
                s.table.rest(task.node_id)  # retried after another node's reply
                continue
            s.table.wake()
            if update is None:
                continue
            s._folded.append(update.content)
            new_model = s.fold(update)
            if new_model is not None:
                self.advance(new_model)
            if s.version >= self.num_rounds:
                break

    def expire(self) -> None:
        """Abandon the tasks past their deadline: their slots are free, their nodes failed."""
        for task in self.strategy.table.expire(self.clock.now):
            log.warning(
                "node %s gave no reply within %.0f s; giving its slot to another node",
                task.node_id,
                task.deadline - task.started,
            )
            self.strategy._count("failed")

    def advance(self, new_model: Arrays) -> None:
        """A new server version: its train metrics and, when due, its evaluation."""
        s = self.strategy
        s.model, s._record = new_model, None
        s.version += 1
        s.totals["updates"] += 1
        s._report["version"] = s.version
        log.info("server version %s at t=%.2f s", s.version, self.clock.now)
        if s._folded:
            metrics = s.train_metrics_aggr_fn(s._folded, s.weighted_by_key)
            self.result.train_metrics_clientapp[s.version] = metrics
            s._folded = []
        if self.evaluate_fn is not None and (
            s.version % s.evaluate_every == 0 or s.version >= self.num_rounds
        ):
            res = self.evaluate_fn(s.version, s._current_record())
            if res is not None:
                self.result.evaluate_metrics_serverapp[s.version] = res

    def finish(self, t_start: float) -> Result:
        """The final model and the metrics per version; the run's counts in the log."""
        s = self.strategy
        s.totals["unfinished"] = len(s.table)
        self.result.arrays = s._current_record()
        log.info(
            "%s finished: %s versions, %s tasks, %s folded, %s dropped, %s failed in %.2f s",
            type(s).__name__,
            s.version,
            s.totals["tasks"],
            s.totals["folded"],
            s.totals["dropped"],
            s.totals["failed"],
            time.time() - t_start,
        )
        return self.result


class AsyncStrategy(StrategyContract):
    """Base class of asynchronous strategies: subclasses implement :meth:`fold`.

    Parameters
    ----------
    concurrency : int
        Clients training at the same time (fewer if fewer nodes are connected).
    staleness : str or mapping
        Staleness function ``s(tau)``: ``constant``, ``polynomial`` or ``hinge``, or a mapping
        such as ``{"name": "hinge", "a": 10, "b": 4}`` (see :mod:`fedflower.aggregation.staleness`).
    max_staleness : int, optional
        Updates staler than this are dropped and counted; ``None`` keeps all.
    evaluate_every : int
        Call ``evaluate_fn`` every this many server updates (and after the last).
    seed : int
        Seeds which idle nodes are picked for new tasks.
    poll_interval : float
        Seconds between polls of a real grid for replies (deployments only).
    task_timeout : float, optional
        Seconds (of the run's clock: virtual in simulation, wall in a deployment) a task may
        run; past it the task is abandoned, its slot refilled and its node counted as failed
        (a killed SuperNode). ``None``: the ``timeout`` of :meth:`start` (Flower's 3600 s).
    weighted_by_key : str
        The reply metric holding a client's aggregation weight.
    arrayrecord_key, configrecord_key : str
        Names of the records in train messages and replies.
    train_metrics_aggr_fn, evaluate_metrics_aggr_fn : callable, optional
        Aggregate the clients' metric records (Flower's weighted mean by default).
    """

    synchronous = False
    """Updates are folded as they arrive: no round sample (see :mod:`fedflower.server.rules`)."""

    def __init__(
        self,
        *,
        concurrency: int = 10,
        staleness: str | dict[str, Any] | StalenessFn | None = "constant",
        max_staleness: int | None = None,
        evaluate_every: int = 1,
        seed: int = 0,
        poll_interval: float = 0.05,
        task_timeout: float | None = None,
        weighted_by_key: str = keys.NUM_EXAMPLES,
        arrayrecord_key: str = keys.ARRAYS,
        configrecord_key: str = keys.CONFIG,
        train_metrics_aggr_fn: MetricsAggr | None = None,
        evaluate_metrics_aggr_fn: MetricsAggr | None = None,
    ) -> None:
        self.concurrency = check_number("concurrency", concurrency, minimum=1, integer=True)
        self.staleness = make_staleness(staleness)
        self.max_staleness = check_number(
            "max_staleness", max_staleness, minimum=0, integer=True, allow_none=True
        )
        self.evaluate_every = check_number(
            "evaluate_every", evaluate_every, minimum=1, integer=True
        )
        self.seed = int(seed)
        self.poll_interval = check_number("poll_interval", poll_interval, minimum=0, min_open=True)
        self.task_timeout = check_number(
            "task_timeout", task_timeout, minimum=0, min_open=True, allow_none=True
        )
        self.weighted_by_key = weighted_by_key
        self.arrayrecord_key = arrayrecord_key
        self.configrecord_key = configrecord_key
        self.train_metrics_aggr_fn = train_metrics_aggr_fn or aggregate_metricrecords
        self.evaluate_metrics_aggr_fn = evaluate_metrics_aggr_fn or aggregate_metricrecords
        self.model: Arrays = []
        self.version = 0
        self.table = TaskTable(self.concurrency, self.seed)
        self.totals: Counter[str] = Counter()
        self._names: list[str] = []
        self._record: ArrayRecord | None = None
        self._report: dict[str, Any] = {}
        self._reset_report()
        self._folded: list[RecordDict] = []

    # -- what subclasses implement ------------------------------------------------------------
    def reset(self, model: Arrays) -> None:
        """Start from ``model`` (version 0): reset the subclass's server state."""

    def fold(self, update: ClientUpdate) -> Arrays | None:
        """Fold one accepted update; return the new global model, or ``None`` if unchanged."""
        raise NotImplementedError

    # -- the asynchronous loop ----------------------------------------------------------------
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: EvaluateFn | None = None,
        checkpoint: Checkpointer | None = None,
        clock: Clock | None = None,
    ) -> Result:
        """Run until the server model has been updated ``num_rounds`` times.

        Parameters
        ----------
        grid : flwr.serverapp.Grid
            The grid the tasks go through (a :class:`~fedflower.engine.clock.Clock` grid
            itself, or wrappers around one, or any Flower grid).
        initial_arrays : ArrayRecord
            The initial global model (version 0).
        num_rounds : int
            Number of server model updates (versions) to make.
        timeout : float
            With no node connected, seconds to wait for one; also a task's deadline when
            ``task_timeout`` is not set.
        train_config : ConfigRecord, optional
            Sent with every task; ``server-round`` is set to the start version + 1.
        evaluate_config : ConfigRecord, optional
            Unused (asynchronous strategies evaluate centrally, through ``evaluate_fn``).
        evaluate_fn : callable, optional
            ``evaluate_fn(version, arrays)``: called for version 0 and every
            ``evaluate_every`` versions after it.
        checkpoint : Checkpointer, optional
            Writes the run's state every ``checkpoint.every`` versions, between two events of
            the loop (virtual clock only); with ``checkpoint.resume`` the run continues from
            the checkpoint instead of version 0 (see :meth:`state_dict`).
        clock : Clock, optional
            The run's clock (the virtual clock under ``grid``'s wrappers); by default
            ``grid`` itself when it is a :class:`~fedflower.engine.clock.Clock`, else the
            wall clock (replies in arrival order).

        Returns
        -------
        flwr.serverapp.strategy.Result
            The final model and the metrics per server version.
        """
        log.info("Starting %s (asynchronous)", type(self).__name__)
        self.summary()
        if clock is None and isinstance(grid, Clock):
            clock = grid
        self._begin(initial_arrays)
        loop = AsyncLoop(
            strategy=self,
            grid=grid,
            clock=WallClock(self.poll_interval) if clock is None else clock,
            wall=clock is None,
            num_rounds=num_rounds,
            timeout=timeout,
            task_timeout=timeout if self.task_timeout is None else self.task_timeout,
            train_config=ConfigRecord() if train_config is None else train_config,
            evaluate_fn=evaluate_fn,
        )
        if checkpoint is not None:
            loop.resume(checkpoint)
        return loop.run(initial_arrays)

    def _begin(self, initial_arrays: ArrayRecord) -> None:
        """Start from ``initial_arrays`` as version 0, with an empty task table."""
        self._names = list(initial_arrays.keys())
        self.model = initial_arrays.to_numpy_ndarrays()
        self._record = initial_arrays
        self.version = 0
        self.totals = Counter()
        self._folded = []
        self._reset_report()
        self.reset(self.model)
        self.table = TaskTable(self.concurrency, self.seed)

    def _count(self, what: str, n: int = 1) -> None:
        self.totals[what] += n
        self._report[what] = self._report.get(what, 0) + n

    def _accept(
        self, reply: Message, task: Task, start: Arrays, now: float
    ) -> tuple[str, ClientUpdate | None]:
        """Unpack a reply: ``("folded", update)``, or why not (failed, rejected, dropped)."""
        node = task.node_id
        if reply.has_error():
            log.warning("node %s failed: %s", node, reply.error.reason)
            return "failed", None
        if now > task.deadline:
            log.warning("node %s replied after its deadline; counted as failed", node)
            return "failed", None
        try:
            _, arrays, weight = unpack_reply(
                reply,
                arrayrecord_key=self.arrayrecord_key,
                weighted_by_key=self.weighted_by_key,
                names=self._names,
                reference=start,
            )
        except UpdateRejected as exc:
            log.warning("update from node %s rejected: %s", node, exc)
            return "rejected", None
        tau = self.version - task.version
        if self.max_staleness is not None and tau > self.max_staleness:
            log.info(
                "dropped an update of node %s: staleness %s > %s", node, tau, self.max_staleness
            )
            return "dropped", None
        self._report["staleness"].append(tau)
        return "folded", ClientUpdate(node, arrays, start, task.version, tau, weight, reply.content)

    def _current_record(self) -> ArrayRecord:
        if self._record is None:
            self._record = self._record_of(self.model)
        return self._record

    def _record_of(self, model: Arrays) -> ArrayRecord:
        return ArrayRecord(
            {k: Array(np.asarray(a)) for k, a in zip(self._names, model, strict=True)}
        )

    def _train_messages(
        self,
        node_ids: list[int],
        train_config: ConfigRecord,
        version: int | None = None,
        model: Arrays | None = None,
    ) -> list[Message]:
        """Train tasks for ``node_ids`` from ``model`` (``version``; default: the newest)."""
        version = self.version if version is None else version
        record = self._current_record() if model is None else self._record_of(model)
        config = ConfigRecord(dict(train_config))
        config[keys.SERVER_ROUND] = version + 1
        content = RecordDict({self.arrayrecord_key: record, self.configrecord_key: config})
        return [
            Message(
                content=content,
                dst_node_id=node,
                message_type=MessageType.TRAIN,
                group_id=str(version + 1),
            )
            for node in node_ids
        ]

    # -- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The server state between two events of the loop, as plain data (for a checkpoint).

        The global model and its version, the run's counters and the per-version report
        accumulated so far, the metric records of the updates folded since the last version
        (FedBuff's partly filled buffer), and the task table: each task in flight with its
        node, start version, dispatch time and deadline, the start models those tasks still
        reference, the resting nodes and the state of the generator that picks nodes.
        Subclasses add their own server state (FedBuff: the buffer and optimizer moments).
        """
        return {
            "names": list(self._names),
            "model": [np.array(a) for a in self.model],
            "version": self.version,
            "totals": dict(self.totals),
            "report": dict(self._report),
            "folded": [
                {name: dict(record) for name, record in content.metric_records.items()}
                for content in self._folded
            ],
            "table": self.table.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._names = list(state["names"])
        self.model = [np.array(a) for a in state["model"]]
        self._record = None
        self.version = int(state["version"])
        self.totals = Counter(state["totals"])
        self._report = dict(state["report"])
        self._folded = [
            RecordDict({name: MetricRecord(record) for name, record in content.items()})
            for content in state["folded"]
        ]
        self.table.load_state_dict(state["table"])

    # -- reporting ----------------------------------------------------------------------------
    def _reset_report(self) -> None:
        self._report = {"version": self.version, "staleness": []}

    def round_report(self) -> dict[str, Any]:
        """Per-version metrics since the last call (for the recorder), then reset them.

        Returns ``version``, ``staleness_mean`` and ``staleness_max`` of the updates folded
        since the last call, the counts ``folded``, ``dropped``, ``failed``, ``rejected`` since
        then and ``tasks`` (client tasks dispatched so far).
        """
        taus = self._report["staleness"]
        report = {
            "version": self.version,
            "staleness_mean": float(np.mean(taus)) if taus else None,
            "staleness_max": int(max(taus)) if taus else None,
            "folded": self._report.get("folded", 0),
            "dropped": self._report.get("dropped", 0),
            "failed": self._report.get("failed", 0),
            "rejected": self._report.get("rejected", 0),
            "tasks": self.totals["tasks"],
        }
        self._reset_report()
        return report

    # -- Flower's Strategy interface ----------------------------------------------------------
    def run_report(self) -> dict[str, Any]:
        """Totals for ``results.json``: server versions and the task counts of the whole run."""
        counts = ("tasks", "folded", "dropped", "failed", "unfinished")
        return {
            "async": {
                "versions": self.version,
                **{k: self.totals.get(k, 0) for k in counts},
                "rejected": self.totals.get("rejected", 0),
            }
        }

    @property
    def rejected(self) -> int:
        """Replies that brought no usable update: failed tasks and malformed updates.

        What ``results.json`` reports as ``rejected_updates``, counted as the synchronous
        :class:`~fedflower.server.checked.CheckedFedAvg` counts it (a client that raised, a
        task past its deadline, an update that fails the checks).
        """
        return int(self.totals.get("failed", 0) + self.totals.get("rejected", 0))

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Not a round-based strategy: the event loop of :meth:`start` dispatches the tasks."""
        raise NotImplementedError(ROUNDLESS.format(type(self).__name__))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Not a round-based strategy: the event loop of :meth:`start` folds the replies."""
        raise NotImplementedError(ROUNDLESS.format(type(self).__name__))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """No federated evaluation: asynchronous strategies evaluate through ``evaluate_fn``."""
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Aggregate evaluation replies, if any arrive."""
        contents = [r.content for r in replies if r.has_content()]
        return self.evaluate_metrics_aggr_fn(contents, self.weighted_by_key) if contents else None

    def summary(self) -> None:
        """Log the strategy's settings."""
        log.info(
            "%s: concurrency=%s staleness=%r max_staleness=%s evaluate_every=%s seed=%s "
            "task_timeout=%s",
            type(self).__name__,
            self.concurrency,
            self.staleness,
            self.max_staleness,
            self.evaluate_every,
            self.seed,
            self.task_timeout,
        )

    def _log_settings(self, **settings: Any) -> None:
        log.info("%s: %s", type(self).__name__, " ".join(f"{k}={v!r}" for k, v in settings.items()))
