"""What many tests share: a fake grid, client replies made by hand, the ``fedflower`` command.

Importable from every test as ``helpers`` (``tests/`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common.constant import ErrorCode

from fedflower import keys

REPO = Path(__file__).resolve().parents[1]
DOC_PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
"""The README and every documentation page."""


@functools.cache
def docs_hooks() -> ModuleType:
    """``docs/hooks/fedflower_docs.py``: the site generator, code-block and notebook reader."""
    spec = importlib.util.spec_from_file_location(
        "fedflower_docs", REPO / "docs/hooks/fedflower_docs.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3", "TQDM_DISABLE": "1"}
"""Environment of a ``fedflower`` subprocess: no TensorFlow banner, no progress bars."""


class FakeGrid:
    """Just enough of a Grid: node ids to sample, messages pushed, replies to a round.

    ``send_and_receive`` answers each message with ``answer(message, failed)`` (records the
    timeout of each call in ``timeouts``), except from nodes in ``silent`` (no reply) and in
    ``slow`` when their ``delay`` exceeds the timeout; nodes in ``broken`` answer with
    ``failed=True``.
    """

    def __init__(
        self,
        node_ids: Iterable[int] = (1, 2, 3, 4, 5),
        *,
        silent: Iterable[int] = (),
        slow: Iterable[int] = (),
        broken: Iterable[int] = (),
        delay: float = 10.0,
        answer: Callable[[Any, bool], Any] | None = None,
    ) -> None:
        self.node_ids = list(node_ids)
        self.silent, self.slow, self.broken = set(silent), set(slow), set(broken)
        self.delay, self.answer = delay, answer
        self.timeouts: list[float | None] = []

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Sequence[Message]) -> list[str]:
        """Record the destination of each message (``sent``) and give each an id."""
        self.sent = [m.metadata.dst_node_id for m in messages]
        return [f"m{i}" for i in range(len(messages))]

    def send_and_receive(self, messages: Sequence[Any], *, timeout: float | None = None) -> list:
        """The replies of the nodes that answer within ``timeout`` (ids set as Flower's grids)."""
        assert self.answer is not None, "FakeGrid(answer=...) builds the replies"
        self.timeouts.append(timeout)
        out = []
        for i, m in enumerate(messages):
            m.metadata.message_id = f"{len(self.timeouts)}-{i}"
            node = m.metadata.dst_node_id
            late = node in self.slow and timeout is not None and self.delay > timeout
            if node not in self.silent and not late:
                out.append(self.answer(m, node in self.broken))
        return out


def make_reply(
    instruction: Message,
    arrays: list[np.ndarray] | None,
    num_examples: int | float | None = 10,
    train_loss: float | None = 0.5,
    error: str | None = None,
    extra_metric_records: int = 0,
) -> Message:
    """A client's reply to ``instruction``: its arrays and metrics, or an error.

    ``arrays=None`` leaves out the ArrayRecord; ``num_examples=None`` the weight metric;
    ``train_loss=None`` the loss metric.
    """
    if error is not None:
        return Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=error), reply_to=instruction
        )
    metrics: dict[str, float | int] = {}
    if train_loss is not None:
        metrics[keys.TRAIN_LOSS] = train_loss
    if num_examples is not None:
        metrics[keys.NUM_EXAMPLES] = num_examples
    content = RecordDict({keys.METRICS: MetricRecord(metrics)})
    if arrays is not None:
        content[keys.ARRAYS] = ArrayRecord(arrays)
    for i in range(extra_metric_records):
        content[f"more-{i}"] = MetricRecord({keys.NUM_EXAMPLES: 1})
    return Message(content, reply_to=instruction)


def task(
    arrays: Sequence[np.ndarray],
    kind: str = MessageType.TRAIN,
    node: int = 1,
    config: Mapping[str, Any] | None = None,
    records: Mapping[str, Sequence[np.ndarray]] | None = None,
) -> Message:
    """The server's instruction to ``node``: the model ``arrays``, a ``config`` record (when
    given) and further array records by key (``records``, e.g. SCAFFOLD's control variate)."""
    content = RecordDict({keys.ARRAYS: ArrayRecord(list(arrays))})
    if config is not None:
        content[keys.CONFIG] = ConfigRecord(dict(config))
    for key, values in (records or {}).items():
        content[key] = ArrayRecord(list(values))
    return Message(content, dst_node_id=node, message_type=kind)


def answer(
    instruction: Message,
    arrays: Sequence[np.ndarray] | None = None,
    metrics: Mapping[str, float | int] | None = None,
) -> Message:
    """A ClientApp's reply to ``instruction``: ``arrays`` and ``metrics``, each when given."""
    content = RecordDict()
    if arrays is not None:
        content[keys.ARRAYS] = ArrayRecord(list(arrays))
    if metrics is not None:
        content[keys.METRICS] = MetricRecord(dict(metrics))
    return Message(content, reply_to=instruction)


def client_context(node_id: int = 1, **node_config: Any) -> Context:
    """A ClientApp's context with an empty ``state`` (what mods keep across rounds goes there)."""
    return Context(
        run_id=1, node_id=node_id, node_config=node_config, state=RecordDict(), run_config={}
    )


def metered_round(grid: Any, messages: Sequence[Message]) -> Any:
    """Send ``messages`` through a ``MeteredGrid`` around an engine's ``grid`` and check the
    counts: the serialized sizes the engine recorded, each asked for once (none left)."""
    from fedflower.engine.metered import MeteredGrid, message_nbytes

    meter = MeteredGrid(grid)
    replies = list(meter.send_and_receive(messages))
    assert meter.bytes_down == sum(message_nbytes(m) for m in messages)
    assert meter.bytes_up == sum(message_nbytes(r) for r in replies)
    assert grid._sizes == {}
    return meter


def fedflower_command(args: Sequence[str], program: Path | None = None) -> list[str]:
    """The ``fedflower`` command line: ``python -m fedflower`` or the given console script."""
    return [str(program), *args] if program else [sys.executable, "-m", "fedflower", *args]


def run_fedflower(
    args: Sequence[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    program: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``fedflower args`` to its end (quiet environment plus ``env``), output captured."""
    return subprocess.run(
        fedflower_command(args, program),
        cwd=cwd,
        env={**os.environ, **QUIET, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_fedflower(args: Sequence[str]) -> subprocess.Popen[str]:
    """Start ``fedflower args`` in the background (stdout dropped, stderr piped)."""
    return subprocess.Popen(
        fedflower_command(args),
        env={**os.environ, **QUIET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


WALL_CLOCK = ("seconds", "elapsed")
"""The ``metrics.jsonl`` fields that measure real time: the only ones two equal runs differ in."""


def run_rows(run_dir: Path, keep: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """A run's ``metrics.jsonl`` rows read by :class:`~fedflower.outputs.rundir.RunDir`:
    the ``keep`` fields, or every field but the wall-clock ones."""
    from fedflower.outputs.rundir import RunDir

    return [
        {k: row[k] for k in keep} if keep is not None
        else {k: v for k, v in row.items() if k not in WALL_CLOCK}
        for row in RunDir(run_dir).metrics()
    ]  # fmt: skip


def worker_that_exits_at_once(*args: Any) -> None:
    """A worker process's target that ends before reading anything from its connection."""
    os._exit(3)
