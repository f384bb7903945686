"""Asynchronous strategies on Flower: the server loop FedBuff and FedAsync share.

Flower's ``Strategy.start`` runs synchronous rounds: every sampled client must reply before
the model moves, so each round lasts as long as its slowest client. :class:`AsyncStrategy`
overrides ``start`` with an event loop instead (FedBuff, Nguyen et al. 2022, arXiv:2106.06639;
FedAsync, Xie et al. 2019, arXiv:1903.03934):

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
import math
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
from flwr.serverapp.strategy import Result, Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fedflower import keys
from fedflower.aggregation.staleness import StalenessFn, make_staleness
from fedflower.checks import check_number
from fedflower.engine.clock import Clock, VirtualClockGrid, WallClock, find_clock
from fedflower.errors import ConfigError, UpdateRejected
from fedflower.server.checkpoint import Checkpointer
from fedflower.server.replies import unpack_reply
from fedflower.server.tasks import Task, TaskTable

log = logging.getLogger(__name__)

Arrays = list[np.ndarray]
MetricsAggr = Callable[[list[RecordDict], str], MetricRecord]
EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]


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
class _Run:
    """What one call of :meth:`AsyncStrategy.start` works with."""

    grid: Grid
    clock: Clock
    wall: bool
    table: TaskTable
    num_rounds: int
    timeout: float
    task_timeout: float
    train_config: ConfigRecord
    evaluate_fn: EvaluateFn | None
    checkpoint: Checkpointer | None = None
    saved: int = 0
    result: Result = field(default_factory=Result)
    idle_since: float | None = None


class AsyncStrategy(Strategy):
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
        self._sync_start: tuple[int, Arrays] | None = None
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
    ) -> Result:
        """Run until the server model has been updated ``num_rounds`` times.

        Parameters
        ----------
        grid : flwr.serverapp.Grid
            A :class:`~fedflower.engine.clock.Clock` grid (virtual time) or any Flower grid
            (wall-clock time, arrival order).
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

        Returns
        -------
        flwr.serverapp.strategy.Result
            The final model and the metrics per server version.
        """
        log.info("Starting %s (asynchronous)", type(self).__name__)
        self.summary()
        t_start = time.time()
        run = self._begin(grid, initial_arrays, num_rounds, timeout, train_config, evaluate_fn)
        if checkpoint is not None:
            self._attach(run, checkpoint)
        if evaluate_fn is not None and not run.saved:  # version 0, unless resumed
            res = evaluate_fn(0, initial_arrays)
            if res is not None:
                run.result.evaluate_metrics_serverapp[0] = res
        while self.version < num_rounds:
            self._dispatch(run)
            if not run.table:
                if self._stop_idle(run):
                    break
                continue
            run.idle_since = None
            replies = list(grid.pull_messages(list(run.table.tasks)))
            # every reply of this instant is received before a freed slot is refilled
            self._receive(run, replies)
            self._expire(run)
            if not replies:
                run.clock.wait(list(run.table.tasks), run.timeout)
            self._save(run)
        self._save(run, last=True)
        return self._finish(run, t_start)

    def _begin(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int,
        timeout: float,
        train_config: ConfigRecord | None,
        evaluate_fn: EvaluateFn | None,
    ) -> _Run:
        found = find_clock(grid)
        self._names = list(initial_arrays.keys())
        self.model = initial_arrays.to_numpy_ndarrays()
        self._record = initial_arrays
        self.version = 0
        self.totals = Counter()
        self._folded = []
        self._reset_report()
        self.reset(self.model)
        self.table = TaskTable(self.concurrency, self.seed)
        run = _Run(
            grid=grid,
            clock=WallClock(self.poll_interval) if found is None else found,
            wall=found is None,
            table=self.table,
            num_rounds=num_rounds,
            timeout=timeout,
            task_timeout=timeout if self.task_timeout is None else self.task_timeout,
            train_config=ConfigRecord() if train_config is None else train_config,
            evaluate_fn=evaluate_fn,
        )
        return run

    def _attach(self, run: _Run, checkpoint: Checkpointer) -> None:
        """Checkpoint the run; when resuming, load the state and re-issue the tasks in flight."""
        if not isinstance(run.clock, VirtualClockGrid):
            raise ConfigError(
                "an asynchronous run is checkpointed and resumed only in simulation, on the "
                "virtual clock (latency model) with the strategy talking to it directly"
            )
        run.checkpoint = checkpoint
        if not checkpoint.resume:
            return
        run.saved, _ = checkpoint.restore()
        self._record = None
        moved = list(run.table.tasks.items())  # in dispatch order
        messages = [
            m
            for _, task in moved
            for m in self._train_messages(
                [task.node_id], run.train_config, task.version, run.table.models[task.version]
            )
        ]
        run.clock.replay([i for i, _ in moved])
        ids = list(run.grid.push_messages(messages))
        run.table.rename(dict(zip([i for i, _ in moved], ids, strict=True)))
        log.info("resumed after server version %s; %s tasks re-issued", run.saved, len(ids))

    def _save(self, run: _Run, last: bool = False) -> None:
        """Write a checkpoint when a multiple of ``checkpoint.every`` versions was passed."""
        if run.checkpoint is None or run.saved == self.version:
            return
        if last or run.checkpoint.due(self.version, run.saved):
            run.checkpoint.save(self.version, self._current_record(), last=True)
            run.saved = self.version

    def _dispatch(self, run: _Run) -> None:
        """Fill the free slots with tasks for random idle nodes, from the newest model."""
        chosen = run.table.pick(run.grid.get_node_ids())
        if not chosen:
            return
        ids = list(run.grid.push_messages(self._train_messages(chosen, run.train_config)))
        run.table.dispatch(ids, chosen, self.version, self.model, run.clock.now, run.task_timeout)
        self.totals["tasks"] += len(ids)
        self._report["tasks"] = self.totals["tasks"]

    def _stop_idle(self, run: _Run) -> bool:
        """Nothing in flight and no node to give work to: wait for one, or say why to stop."""
        if run.table.all_resting(run.grid.get_node_ids()):
            log.error(
                "every node failed since the last accepted update; stopping at version %s",
                self.version,
            )
            return True
        if not run.wall:
            log.error("no node is available for training; stopping at %s", self.version)
            return True
        run.idle_since = run.clock.now if run.idle_since is None else run.idle_since
        if run.clock.now - run.idle_since > run.timeout:
            log.error("no node connected for %.0f s; stopping", run.timeout)
            return True
        run.clock.wait([], run.timeout)
        return False

    def _receive(self, run: _Run, replies: list[Message]) -> None:
        """Fold the replies in order; stop once the last version is made."""
        for reply in replies:
            released = run.table.release(reply.metadata.reply_to_message_id)
            if released is None:
                continue
            task, start = released
            outcome, update = self._accept(reply, task, start, run.clock.now)
            self._count(outcome)
            if outcome in ("failed", "rejected"):
                run.table.rest(task.node_id)  # retried after another node's reply
                continue
            run.table.wake()
            if update is None:
                continue
            self._folded.append(update.content)
            new_model = self.fold(update)
            if new_model is not None:
                self._advance(run, new_model)
            if self.version >= run.num_rounds:
                break

    def _expire(self, run: _Run) -> None:
        """Abandon the tasks past their deadline: their slots are free, their nodes failed."""
        for task in run.table.expire(run.clock.now):
            log.warning(
                "node %s gave no reply within %.0f s; giving its slot to another node",
                task.node_id,
                task.deadline - task.started,
            )
            self._count("failed")

    def _advance(self, run: _Run, new_model: Arrays) -> None:
        self.model = new_model
        self._record = None
        self.version += 1
        self.totals["updates"] += 1
        self._report["version"] = self.version
        log.info("server version %s at t=%.2f s", self.version, run.clock.now)
        if self._folded:
            metrics = self.train_metrics_aggr_fn(self._folded, self.weighted_by_key)
            run.result.train_metrics_clientapp[self.version] = metrics
            self._folded = []
        if run.evaluate_fn is not None and (
            self.version % self.evaluate_every == 0 or self.version >= run.num_rounds
        ):
            res = run.evaluate_fn(self.version, self._current_record())
            if res is not None:
                run.result.evaluate_metrics_serverapp[self.version] = res

    def _finish(self, run: _Run, t_start: float) -> Result:
        self.totals["unfinished"] = len(run.table)
        run.result.arrays = self._current_record()
        log.info(
            "%s finished: %s versions, %s tasks, %s folded, %s dropped, %s failed in %.2f s",
            type(self).__name__,
            self.version,
            self.totals["tasks"],
            self.totals["folded"],
            self.totals["dropped"],
            self.totals["failed"],
            time.time() - t_start,
        )
        return run.result

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
        """Messages for ``concurrency`` random nodes (for Flower's synchronous loop only).

        The asynchronous loop in :meth:`start` dispatches tasks itself; this method lets the
        strategy also run in Flower's round-based ``Strategy.start``, where every round's
        replies are folded with staleness 0.
        """
        if not self.model:
            self._names = list(arrays.keys())
            self.model = arrays.to_numpy_ndarrays()
            self._record = arrays
            self.reset(self.model)
        nodes = sorted(grid.get_node_ids())
        rng = np.random.default_rng([self.seed, server_round])
        picks = rng.choice(len(nodes), min(self.concurrency, len(nodes)), False)  # positions
        chosen = [int(nodes[i]) for i in picks]
        self._sync_start = (self.version, self.model)
        return self._train_messages(chosen, config)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Fold a synchronous round's replies (by node id) and return the resulting model."""
        if self._sync_start is None:
            return None, None
        version, start = self._sync_start
        changed, contents = False, []
        for reply in sorted(replies, key=lambda m: m.metadata.src_node_id):
            task = Task(reply.metadata.src_node_id, version, 0.0, math.inf)
            outcome, update = self._accept(reply, task, start, 0.0)
            self._count(outcome)
            if update is None:
                continue
            contents.append(update.content)
            new_model = self.fold(update)
            if new_model is not None:
                self.model, self._record, changed = new_model, None, True
                self.version += 1
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key) if contents else None
        return (self._current_record() if changed else None), metrics

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
