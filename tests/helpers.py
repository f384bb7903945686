"""What many tests share: a fake grid, client replies made by hand, the ``fedflower`` command.

Importable from every test as ``helpers`` (``tests/`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
from flwr.app import ArrayRecord, Error, Message, MetricRecord, RecordDict
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
    """Just enough of a Grid for a strategy's node sampling and the async loop's dispatch."""

    def __init__(self, node_ids: Sequence[int] = (1, 2, 3, 4, 5)) -> None:
        self.node_ids = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Sequence[Message]) -> list[str]:
        """Record the destination of each message (``sent``) and give each an id."""
        self.sent = [m.metadata.dst_node_id for m in messages]
        return [f"m{i}" for i in range(len(messages))]


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
