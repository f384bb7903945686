"""The run summary: the naive traffic estimate where it applies (from the clients that trained
each round), the whole output path; the metering grid's count of training clients."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from rich.console import Console

from fedflower.engine.metered import MeteredGrid
from fedflower.engine.wrapper import GridWrapper
from fedflower.server.recorder import NAIVE_ESTIMATE, Recorder


def finished(
    out: Path, rows: list[dict[str, Any]], num_clients: int, **extra: Any
) -> tuple[dict[str, Any], str]:
    """A recorder that saw ``rows`` (extra row fields) and finished; its results and summary."""
    recorder = Recorder(out, num_rounds=len(rows), progress=False)
    recorder.console = Console(width=80, record=True, force_terminal=False)
    for rnd, row in enumerate(rows, start=1):
        recorder.round_end(rnd, 0.5, 0.5, bytes_down=10, bytes_up=5, **row)
    results = recorder.finish({}, model_bytes=100, num_clients=num_clients, plots=False, **extra)
    return results, recorder.console.export_text()


def cells(text: str) -> dict[str, str]:
    """The summary table's rows as {label: value}."""
    rows = [line.strip("│ ").split("│") for line in text.splitlines() if line.count("│") == 3]
    return {label.strip(): value.strip() for label, value in rows}


@pytest.mark.parametrize("asynchronous", [False, True])
def test_summary_names_the_estimate_and_prints_the_whole_path(
    tmp_path: Path, asynchronous: bool
) -> None:
    out = tmp_path / ("a-very-long-directory-name-" * 4) / "run"
    out.mkdir(parents=True)
    extra = {"async": {"tasks": 4, "folded": 3, "dropped": 1, "failed": 0}} if asynchronous else {}
    results, text = finished(out, [{}], num_clients=3, **extra)
    assert ("naive estimate: clients x model bytes x rounds" in text) is not asynchronous
    assert cells(text).get("clients trained per round") == (None if asynchronous else "3 of 3")
    assert "seed" not in text
    assert f"outputs: {out.resolve()}" in text  # one line, though longer than 80 columns
    assert results["communication"]["naive_estimate"] == NAIVE_ESTIMATE


def test_estimate_counts_the_clients_that_trained_not_the_population(tmp_path: Path) -> None:
    rows = [{"train_clients": 10}, {"train_clients": 10}, {"train_clients": 7}]
    results, text = finished(tmp_path, rows, num_clients=100_000)
    comm = results["communication"]
    assert comm["naive_estimate_bytes"] == (10 + 10 + 7) * 100  # not 100,000 x 100 x 3
    assert comm["clients_per_round"] == pytest.approx(9.0)
    assert comm["num_clients"] == 100_000
    summary = cells(text)
    assert summary["clients trained per round"] == "9 of 100000"
    assert summary["naive estimate: clients x model bytes x rounds"] == "2.6 KiB"
    assert summary["model bytes"] == "100 B"
    _, uneven = finished(tmp_path, rows[:1] + rows[2:], num_clients=20)
    assert cells(uneven)["clients trained per round"] == "8.5 of 20"


class Sink(GridWrapper):
    """An inner grid that accepts every message and answers nothing."""

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return [str(i) for i, _ in enumerate(messages)]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return []


def message(kind: str, node: int, model: bool) -> Message:
    content = RecordDict({"config": ConfigRecord({"x": 1})})
    if model:
        content["arrays"] = ArrayRecord([np.zeros(3, np.float32)])
    return Message(content, node, kind)


@pytest.mark.usefixtures("task_identity")
def test_metering_counts_training_clients_per_round() -> None:
    grid = MeteredGrid(Sink())
    grid.push_messages([message(MessageType.TRAIN, n, model=True) for n in (1, 2, 3)])
    grid.push_messages([message(MessageType.EVALUATE, n, model=True) for n in (1, 2, 3)])
    # exchanges without a model (SecAgg+'s setup, key sharing, unmasking) are no training task
    grid.send_and_receive([message(MessageType.TRAIN, n, model=False) for n in (1, 2, 3)])
    assert grid.round_report() == {"train_clients": 3}
    grid.send_and_receive([message(MessageType.TRAIN, 4, model=True)])
    assert grid.round_report() == {"train_clients": 1}
    assert grid.round_report() == {"train_clients": 0}
    assert grid.bytes_down > 0
