"""Rounds with a deadline and a quorum, the same on a deployment's grid as in simulation.

Flower's synchronous strategies wait in every round for ``min_available_nodes`` connected
nodes and for every reply up to ``Strategy.start(timeout=...)`` (3600 s): one dead SuperNode
stalls a run. :class:`DeadlineGrid` gives each ``send_and_receive`` the round's deadline
(``round_timeout``), keeps the replies of a round only when enough of them are usable
(``min_train_nodes`` / ``min_evaluate_nodes``; otherwise the round is skipped and the model
is unchanged) and ends the run with :class:`~fedflower.errors.FederationError` after
``max_failed_rounds`` rounds in a row without quorum. ``min_available_nodes`` is waited for
once, before the first round (``wait_timeout``), with a line every few seconds. Each node a
round sent to is counted once, as ok, failed, missing or late: a reply is attributed through
its ``reply_to_message_id`` to the node its message went to, and a reply to a message of an
earlier round is discarded (counted late), never aggregated. On a deployment the replies
are pulled every :data:`DEPLOYED_POLL_INTERVAL` s instead of Flower's 3 s.

A round may take several exchanges: Flower's ``SecAggPlusWorkflow`` sends four training
messages a node per round (setup, share keys, collect masked vectors, unmask), all with the
round's ``group_id``. Consecutive training exchanges with one non-empty ``group_id`` are one
round here: a node lost in any of them is recorded once, the round is skipped at most once,
and the protocol (:mod:`fedflower.server.secagg`) reports through :meth:`DeadlineGrid.fail_round`
a round it could not finish (too few survivors to unmask the sum).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from fedflower.engine.wrapper import GridWrapper
from fedflower.errors import ConfigError, FederationError

log = logging.getLogger(__name__)

DEADLINE_KEYS = ("round_timeout", "max_failed_rounds", "wait_timeout")
"""The ``strategy.*`` options read here, not by the strategy plugin."""

WAIT_LOG_EVERY = 5.0
"""Seconds between two "waiting for nodes" lines."""

DEPLOYED_POLL_INTERVAL = 0.2
"""Seconds between two pulls of replies from the SuperLink (Flower's own grid: 3 s)."""


@runtime_checkable
class RoundJudge(Protocol):
    """A grid that keeps the count of failed rounds: a protocol tells it of a round it lost."""

    def fail_round(self, group: str, reason: str) -> None:  # noqa: D102
        ...


@dataclass(frozen=True)
class DeadlineOptions:
    """``strategy.round_timeout`` (s, ``None``: no deadline), ``max_failed_rounds`` (rounds in
    a row without quorum before the run ends), ``wait_timeout`` (s to wait for
    ``min_available_nodes`` before the first round).
    """

    round_timeout: float | None = None
    max_failed_rounds: int = 3
    wait_timeout: float = 600.0

    def __post_init__(self) -> None:
        for key in ("round_timeout", "wait_timeout"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise ConfigError(
                    f"strategy.{key} must be a positive number of seconds, got {value!r}"
                )
        if not isinstance(self.max_failed_rounds, int) or self.max_failed_rounds < 1:
            raise ConfigError(
                "strategy.max_failed_rounds must be an integer >= 1, "
                f"got {self.max_failed_rounds!r}"
            )

    @classmethod
    def split(cls, options: dict[str, Any]) -> tuple[DeadlineOptions, dict[str, Any]]:
        """The deadline options among a strategy group's options, and the plugin's own."""
        mine = {k: v for k, v in options.items() if k in DEADLINE_KEYS and v is not None}
        return cls(**mine), {k: v for k, v in options.items() if k not in DEADLINE_KEYS}


@dataclass
class _Round:
    """The exchanges of one round so far: its group id, each node's status, and the failed
    rounds in a row before it (so a round is counted as failed once).
    """

    group: str
    failed_before: int
    skipped: bool = False
    nodes: dict[int, str] = field(default_factory=dict)


class DeadlineGrid(GridWrapper):
    """A grid whose rounds end at a deadline and count only with a quorum.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The wrapped grid.
    strategy : object
        The plugin strategy; its ``min_available_nodes``, ``min_train_nodes`` and
        ``min_evaluate_nodes`` are read (and ``min_available_nodes`` set to 0 once the first
        round starts, so later rounds do not wait for it again).
    options : DeadlineOptions
        The round deadline, the rounds without quorum allowed in a row, the first wait.
    poll_interval : float, optional
        Pull replies every this many seconds (push and pull here); ``None`` leaves the
        waiting to the wrapped grid's ``send_and_receive``.
    """

    def __init__(
        self,
        grid: Grid,
        strategy: Any,
        options: DeadlineOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float | None = None,
    ) -> None:
        super().__init__(grid)
        self.strategy = strategy
        if options.round_timeout is None:
            raise ConfigError("strategy.round_timeout must be set for a deadline, got None")
        self.round_timeout = float(options.round_timeout)
        self.wait_timeout = float(options.wait_timeout)
        self.max_failed_rounds = options.max_failed_rounds
        self.clock, self.sleep = clock, sleep
        self.started = False
        self.failed_in_a_row = 0
        self._row: dict[str, Any] = {}
        self._rounds: dict[str, _Round] = {}
        self.poll_interval = poll_interval
        self._totals = {"missing": 0, "failed_nodes": 0, "late_replies": 0, "skipped_rounds": 0}

    def wait_for_nodes(self) -> None:
        """Block until ``min_available_nodes`` are connected, or raise after ``wait_timeout``."""
        need = int(self.strategy.min_available_nodes)
        start = last = self.clock()
        while (have := len(list(self.inner.get_node_ids()))) < need:
            now = self.clock()
            if now - start > self.wait_timeout:
                raise FederationError(
                    f"only {have} of strategy.min_available_nodes={need} nodes connected after "
                    f"{self.wait_timeout:.0f} s; start more SuperNodes or lower it"
                )
            if now - last >= WAIT_LOG_EVERY or now == start:
                log.info("waiting for nodes: %d of %d connected", have, need)
                last = now
            self.sleep(1.0)
        self.started = True
        self.strategy.min_available_nodes = 0

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        if not self.started:
            self.wait_for_nodes()
        return self.inner.get_node_ids()

    def send_and_receive(  # noqa: D102
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        if not messages:
            return []
        deadline = self.round_timeout if timeout is None else min(timeout, self.round_timeout)
        if self.poll_interval is None:
            replies = list(self.inner.send_and_receive(messages, timeout=deadline))
            ids: list[str | None] = [m.metadata.message_id or None for m in messages]
        else:
            ids, replies = self._push_and_poll(messages, deadline)
        sent = {i: m.metadata.dst_node_id for i, m in zip(ids, messages, strict=True) if i}
        first = messages[0].metadata
        kind = "train" if first.message_type == MessageType.TRAIN else "evaluate"
        nodes = [m.metadata.dst_node_id for m in messages]
        return self._judge(nodes, sent, replies, kind, first.group_id or "")

    def _push_and_poll(
        self, messages: list[Message], deadline: float
    ) -> tuple[list[str | None], list[Message]]:
        """Push, then pull every ``poll_interval`` s until all replied or ``deadline`` passed.

        Flower's deployment grid pulls every 3 s; a round waits on average half of that
        twice (train, evaluate) for replies that are already there.
        """
        ids = [i or None for i in self.inner.push_messages(messages)]
        waiting = {i for i in ids if i}
        replies: list[Message] = []
        end = self.clock() + deadline
        while waiting:
            got = list(self.inner.pull_messages(waiting))
            replies += got
            waiting -= {r.metadata.reply_to_message_id for r in got}
            if not waiting or self.clock() >= end:
                break
            self.sleep(self.poll_interval or 0.0)
        return ids, replies

    def _judge(
        self, nodes: list[int], sent: dict[str, int], replies: list[Message], kind: str, group: str
    ) -> list[Message]:
        """Each node sent to is exactly one of ok, failed, late or missing this round.

        A reply belongs to the node its message was sent to (``reply_to_message_id``), not
        to its ``src_node_id``: the SuperLink answers for a node it lost with an error
        reply of its own. A reply to a message of an earlier call is discarded (late).
        """
        current = [r for r in replies if r.metadata.reply_to_message_id in sent]
        stale = [r for r in replies if r.metadata.reply_to_message_id not in sent]
        status = {n: "missing" for n in nodes}
        for r in stale:
            if status.get(r.metadata.src_node_id, "missing") == "missing":
                status[r.metadata.src_node_id] = "late"
        for r in current:
            status[sent[r.metadata.reply_to_message_id]] = "failed" if r.has_error() else "ok"
        self._record(kind, group, status)
        self._totals["late_replies"] += len(stale)
        ok = sum(s == "ok" for s in status.values())
        train = kind == "train"
        quorum = int(self.strategy.min_train_nodes if train else self.strategy.min_evaluate_nodes)
        if ok >= quorum:
            if train and not self._rounds[kind].skipped:
                self.failed_in_a_row = 0
            return current
        self._skip(kind, ok, len(nodes), quorum)
        return []

    def _open(self, kind: str, group: str) -> _Round:
        """The round of ``kind`` an exchange belongs to: the open one (same non-empty group id,
        as SecAgg+'s stages) or a new one.
        """
        current = self._rounds.get(kind)
        if current is None or not group or current.group != group:
            current = self._rounds[kind] = _Round(group, self.failed_in_a_row)
        return current

    def _record(self, kind: str, group: str, status: dict[int, str]) -> None:
        """Fold one exchange's statuses into its round's: a node's first loss is the one kept."""
        nodes = self._open(kind, group).nodes
        for node, what in status.items():
            if nodes.get(node, "ok") == "ok":
                nodes[node] = what
                if what in ("missing", "failed"):
                    self._totals["missing" if what == "missing" else "failed_nodes"] += 1
        for what in ("missing", "late", "failed"):
            self._row[f"{kind}_{what}"] = sorted(n for n, s in nodes.items() if s == what)

    def _skip(self, kind: str, ok: int, sent: int, quorum: int) -> None:
        """Log the skipped round; a training round counts toward ``max_failed_rounds``."""
        r = self._row
        reason = (
            f"{kind} round skipped: {ok} usable replies of {sent} sent, quorum {quorum} "
            f"(missing {r[f'{kind}_missing']}, late {r[f'{kind}_late']}, "
            f"failed {r[f'{kind}_failed']})"
        )
        if kind == "train":
            self._fail(self._rounds[kind], reason)
        else:
            log.warning("%s", reason)

    def fail_round(self, group: str, reason: str) -> None:
        """Skip the training round ``group`` (model unchanged), once; log ``reason``.

        Ends the run with :class:`~fedflower.errors.FederationError` after
        ``max_failed_rounds`` skipped rounds in a row. SecAgg+ calls it for a round whose
        sum it could not unmask; a round the quorum already skipped is not counted again.
        """
        self._fail(self._open("train", group), reason)

    def _fail(self, current: _Round, reason: str) -> None:
        """Count the training round ``current`` as skipped unless it already is."""
        if current.skipped:
            return
        log.warning("%s", reason)
        current.skipped = True
        self._row["skipped"] = True
        self._totals["skipped_rounds"] += 1
        self.failed_in_a_row = current.failed_before + 1
        if self.failed_in_a_row >= self.max_failed_rounds:
            raise FederationError(
                f"{self.failed_in_a_row} rounds in a row skipped, the last: {reason}; "
                "the federation lost too many nodes"
            )

    def round_report(self) -> dict[str, Any]:
        """The round's missing and failed nodes and whether the round got skipped."""
        row, self._row = self._row, {}
        return row

    def run_report(self) -> dict[str, Any]:
        """Totals over the run."""
        return {"deadline": dict(self._totals)}


def with_deadline(pipeline: Any, strategy: Any, options: dict[str, Any]) -> None:
    """Wrap ``pipeline``'s grid in a :class:`DeadlineGrid` if ``strategy.round_timeout`` is set.

    Synchronous strategies only: an asynchronous one (FedBuff, FedAsync) has no rounds to
    wait for and gives up on a task after its own ``task_timeout``.
    """
    from fedflower.server.async_strategy import AsyncStrategy

    deadline, _ = DeadlineOptions.split(options)
    if deadline.round_timeout is not None and not isinstance(strategy, AsyncStrategy):
        poll = DEPLOYED_POLL_INTERVAL if _deployed(pipeline.grid) else None
        pipeline.deadline = pipeline.grid = DeadlineGrid(
            pipeline.grid, strategy, deadline, poll_interval=poll
        )


def _deployed(grid: Any) -> bool:
    """Whether the grid under the wrappers is Flower's deployment grid (the SuperLink's)."""
    from flwr.superlink.grid.http_grid import HttpGrid

    while isinstance(grid, GridWrapper):
        grid = grid.inner
    return isinstance(grid, HttpGrid)
