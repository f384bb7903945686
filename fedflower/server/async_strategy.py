"""Asynchronous strategies on Flower: the server loop FedBuff and FedAsync share.

Flower's ``Strategy.start`` runs synchronous rounds: every sampled client must reply before
the model moves, so each round lasts as long as its slowest client. :class:`AsyncStrategy`
overrides ``start`` with an event loop instead (FedBuff, Nguyen et al. 2022, arXiv:2106.06639;
FedAsync, Xie et al. 2019, arXiv:1903.03934):

1. keep ``concurrency`` clients training at once (``grid.push_messages``), each from the newest
   model, remembering which model version each task started from;
2. take the next finished task's reply (``grid.pull_messages``), compute its staleness
   ``tau`` (server versions since it started), drop it if ``tau > max_staleness``, else fold it
   into the server model through the subclass's :meth:`AsyncStrategy.fold`;
3. when the fold moved the model, bump the version, aggregate the folded updates' train
   metrics and call ``evaluate_fn(version, arrays)`` every ``evaluate_every`` versions;
4. refill the freed slot at once with the newest model.

``num_rounds`` counts *server model updates* (versions), not client tasks: FedBuff with buffer
size ``K`` runs ``K * num_rounds`` accepted client tasks, FedAsync one per update.

What "the next finished task" means comes from a :class:`~fedflower.engine.clock.Clock`: in
simulation the grid is a :class:`~fedflower.engine.clock.VirtualClockGrid` and replies come in
order of their virtual finish time (deterministic for a seed); with any other grid (a real
deployment) replies are folded in arrival order and the wall clock is used, tasks without a
reply after ``timeout`` seconds are abandoned and their slot refilled, and nodes that connect
later are given work. A node whose task failed (error reply, malformed update, timeout) gets new
work only after another node's reply has been accepted, so a client that crashes at once cannot
spin the loop; when every node has failed since the last accepted reply, the run stops.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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

from fedflower import aggregation, keys
from fedflower.aggregation.staleness import StalenessFn, make_staleness
from fedflower.engine.clock import Clock, WallClock, find_clock
from fedflower.errors import ConfigError, UpdateRejected

log = logging.getLogger(__name__)

Arrays = list[np.ndarray]
MetricsAggr = Callable[[list[RecordDict], str], MetricRecord]


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
class _Task:
    node_id: int
    version: int
    started: float


def _int_option(name: str, value: Any, minimum: int, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an integer >= {minimum}" + (" or null" if allow_none else "")
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    return value


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
    weighted_by_key : str
        The reply metric holding a client's aggregation weight.
    arrayrecord_key, configrecord_key : str
        Names of the records in train messages and replies.
    train_metrics_aggr_fn, evaluate_metrics_aggr_fn : callable, optional
        Aggregate the clients' metric records (Flower's weighted mean by default).
    """

    def __init__(
        self,
        *,
        concurrency: int = 10,
        staleness: str | dict[str, Any] | StalenessFn | None = "constant",
        max_staleness: int | None = None,
        evaluate_every: int = 1,
        seed: int = 0,
        poll_interval: float = 0.05,
        weighted_by_key: str = keys.NUM_EXAMPLES,
        arrayrecord_key: str = keys.ARRAYS,
        configrecord_key: str = keys.CONFIG,
        train_metrics_aggr_fn: MetricsAggr | None = None,
        evaluate_metrics_aggr_fn: MetricsAggr | None = None,
    ) -> None:
        self.concurrency = _int_option("concurrency", concurrency, 1)
        self.staleness = make_staleness(staleness)
        self.max_staleness = _int_option("max_staleness", max_staleness, 0, allow_none=True)
        self.evaluate_every = _int_option("evaluate_every", evaluate_every, 1)
        self.seed = int(seed)
        if not poll_interval > 0:
            raise ConfigError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        self.poll_interval = float(poll_interval)
        self.weighted_by_key = weighted_by_key
        self.arrayrecord_key = arrayrecord_key
        self.configrecord_key = configrecord_key
        self.train_metrics_aggr_fn = train_metrics_aggr_fn or aggregate_metricrecords
        self.evaluate_metrics_aggr_fn = evaluate_metrics_aggr_fn or aggregate_metricrecords
        self.model: Arrays = []
        self.version = 0
        self.rejected = 0
        self.totals: Counter[str] = Counter()
        self._names: list[str] = []
        self._record: ArrayRecord | None = None
        self._report: dict[str, Any] = {}
        self._reset_report()
        self._sync_start: tuple[int, Arrays] | None = None

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
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
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
            Seconds a task may stay without reply before its slot is given to another node
            (and, with no node connected, how long to wait for one).
        train_config : ConfigRecord, optional
            Sent with every task; ``server-round`` is set to the start version + 1.
        evaluate_config : ConfigRecord, optional
            Unused (asynchronous strategies evaluate centrally, through ``evaluate_fn``).
        evaluate_fn : callable, optional
            ``evaluate_fn(version, arrays)``: called for version 0 and every
            ``evaluate_every`` versions after it.

        Returns
        -------
        flwr.serverapp.strategy.Result
            The final model and the metrics per server version.
        """
        log.info("Starting %s (asynchronous)", type(self).__name__)
        self.summary()
        found = find_clock(grid)
        wall = found is None
        clock: Clock = WallClock(self.poll_interval) if found is None else found
        train_config = ConfigRecord() if train_config is None else train_config
        result = Result()
        self._names = list(initial_arrays.keys())
        self.model = initial_arrays.to_numpy_ndarrays()
        self._record = initial_arrays
        self.version = 0
        self.totals = Counter()
        self._reset_report()
        self.reset(self.model)
        rng = np.random.default_rng(self.seed)
        starts: dict[int, Arrays] = {}
        refs: Counter[int] = Counter()
        in_flight: dict[str, _Task] = {}
        folded: list[RecordDict] = []
        # nodes whose last task failed wait until another node's reply is accepted
        resting: set[int] = set()
        idle_since: float | None = None
        t_start = time.time()

        if evaluate_fn is not None:
            res = evaluate_fn(0, initial_arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res

        def release(task: _Task) -> None:
            refs[task.version] -= 1
            if refs[task.version] <= 0:
                del refs[task.version]
                starts.pop(task.version, None)

        def dispatch() -> None:
            free = self.concurrency - len(in_flight)
            if free <= 0:
                return
            busy = {t.node_id for t in in_flight.values()}
            idle = sorted(set(grid.get_node_ids()) - busy - resting)
            if not idle:
                return
            # pick positions, not ids: uint64 node ids do not survive numpy's float conversion
            picks = rng.choice(len(idle), size=min(free, len(idle)), replace=False)
            chosen = [int(idle[i]) for i in picks]
            messages = self._train_messages(chosen, train_config)
            ids = list(grid.push_messages(messages))
            now = clock.now
            starts.setdefault(self.version, self.model)
            for message_id, node in zip(ids, chosen, strict=True):
                in_flight[message_id] = _Task(node, self.version, now)
                refs[self.version] += 1
            self.totals["tasks"] += len(ids)
            self._report["tasks"] = self.totals["tasks"]

        while self.version < num_rounds:
            dispatch()
            if not in_flight:
                if resting and set(grid.get_node_ids()) <= resting:
                    log.error(
                        "every node failed since the last accepted update; stopping at version %s",
                        self.version,
                    )
                    break
                if not wall:
                    log.error("no node is available for training; stopping at %s", self.version)
                    break
                idle_since = clock.now if idle_since is None else idle_since
                if clock.now - idle_since > timeout:
                    log.error("no node connected for %.0f s; stopping", timeout)
                    break
                clock.wait([], timeout)
                continue
            idle_since = None
            replies = list(grid.pull_messages(list(in_flight)))
            if not replies:
                if wall:
                    resting.update(self._expire(in_flight, clock.now, timeout, release))
                clock.wait(list(in_flight), timeout)
                continue
            for reply in replies:
                task = in_flight.pop(reply.metadata.reply_to_message_id, None)
                if task is None:
                    continue
                dropped = self.totals["dropped"]
                update = self._accept(reply, task, starts)
                release(task)
                if update is None and self.totals["dropped"] == dropped:
                    resting.add(task.node_id)  # failed or malformed: retry it later
                else:
                    resting.clear()
                if update is not None:
                    folded.append(update.content)
                    new_model = self.fold(update)
                    if new_model is not None:
                        self._advance(new_model, folded, result, evaluate_fn, num_rounds, clock)
                        folded = []
                if self.version >= num_rounds:
                    break
                dispatch()

        self.totals["unfinished"] = len(in_flight)
        result.arrays = self._current_record()
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
        return result

    def _advance(
        self,
        new_model: Arrays,
        folded: list[RecordDict],
        result: Result,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None,
        num_rounds: int,
        clock: Clock,
    ) -> None:
        self.model = new_model
        self._record = None
        self.version += 1
        self.totals["updates"] += 1
        self._report["version"] = self.version
        log.info("server version %s at t=%.2f s", self.version, clock.now)
        if folded:
            metrics = self.train_metrics_aggr_fn(folded, self.weighted_by_key)
            result.train_metrics_clientapp[self.version] = metrics
        if evaluate_fn is not None and (
            self.version % self.evaluate_every == 0 or self.version >= num_rounds
        ):
            res = evaluate_fn(self.version, self._current_record())
            if res is not None:
                result.evaluate_metrics_serverapp[self.version] = res

    def _expire(
        self,
        in_flight: dict[str, _Task],
        now: float,
        timeout: float,
        release: Callable[[_Task], None],
    ) -> list[int]:
        expired = []
        for message_id, task in list(in_flight.items()):
            if now - task.started > timeout:
                log.warning(
                    "node %s gave no reply within %.0f s; giving its slot to another node",
                    task.node_id,
                    timeout,
                )
                del in_flight[message_id]
                release(task)
                self._count("failed")
                expired.append(task.node_id)
        return expired

    def _count(self, what: str, n: int = 1) -> None:
        self.totals[what] += n
        self._report[what] = self._report.get(what, 0) + n

    def _accept(
        self, reply: Message, task: _Task, starts: dict[int, Arrays]
    ) -> ClientUpdate | None:
        """Unpack a reply into a :class:`ClientUpdate`, or count why it is not one."""
        node = task.node_id
        if reply.has_error():
            log.warning("node %s failed: %s", node, reply.error.reason)
            self._count("failed")
            return None
        start = starts[task.version]
        try:
            arrays, weight = self._unpack(reply, start)
        except UpdateRejected as exc:
            self.rejected += 1
            self._count("rejected")
            log.warning("update from node %s rejected: %s", node, exc)
            return None
        tau = self.version - task.version
        if self.max_staleness is not None and tau > self.max_staleness:
            log.info(
                "dropped an update of node %s: staleness %s > %s", node, tau, self.max_staleness
            )
            self._count("dropped")
            return None
        self._count("folded")
        self._report["staleness"].append(tau)
        return ClientUpdate(node, arrays, start, task.version, tau, weight, reply.content)

    def _unpack(self, reply: Message, reference: Arrays) -> tuple[Arrays, float]:
        content = reply.content
        if self.arrayrecord_key not in content.array_records:
            raise UpdateRejected(f"reply has no {self.arrayrecord_key!r} ArrayRecord")
        weights = [
            m[self.weighted_by_key]
            for m in content.metric_records.values()
            if self.weighted_by_key in m
        ]
        if len(weights) != 1:
            raise UpdateRejected(f"reply must carry exactly one {self.weighted_by_key!r} metric")
        arrays = content.array_records[self.arrayrecord_key].to_numpy_ndarrays()
        aggregation.check_update(arrays, reference)
        weight = float(weights[0])  # type: ignore[arg-type]
        if not np.isfinite(weight) or weight < 0:
            raise UpdateRejected(f"{self.weighted_by_key!r} must be finite and >= 0, got {weight}")
        return arrays, weight

    def _current_record(self) -> ArrayRecord:
        if self._record is None:
            self._record = ArrayRecord(
                {k: Array(np.asarray(a)) for k, a in zip(self._names, self.model, strict=True)}
            )
        return self._record

    def _train_messages(self, node_ids: list[int], train_config: ConfigRecord) -> list[Message]:
        config = ConfigRecord(dict(train_config))
        config[keys.SERVER_ROUND] = self.version + 1
        content = RecordDict(
            {self.arrayrecord_key: self._current_record(), self.configrecord_key: config}
        )
        return [
            Message(
                content=content,
                dst_node_id=node,
                message_type=MessageType.TRAIN,
                group_id=str(self.version + 1),
            )
            for node in node_ids
        ]

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
                "rejected": self.rejected,
            }
        }

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
            task = _Task(reply.metadata.src_node_id, version, 0.0)
            update = self._accept(reply, task, {version: start})
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
            "%s: concurrency=%s staleness=%r max_staleness=%s evaluate_every=%s seed=%s",
            type(self).__name__,
            self.concurrency,
            self.staleness,
            self.max_staleness,
            self.evaluate_every,
            self.seed,
        )

    def _log_settings(self, **settings: Any) -> None:
        log.info("%s: %s", type(self).__name__, " ".join(f"{k}={v!r}" for k, v in settings.items()))
