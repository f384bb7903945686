"""fedflower.outputs: the run writer and the run-directory reader agree; console fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedflower.errors import DataError
from fedflower.outputs import RunDir, RunWriter
from fedflower.outputs import fields as fields_module
from fedflower.outputs.console import round_line
from fedflower.outputs.fields import Field, round_suffix, summary_rows
from fedflower.outputs.rundir import find_runs

ROWS = [{"round": r, "loss": 1.0 / r, "accuracy": 0.5 + 0.1 * r} for r in (1, 2, 3)]


def test_written_rows_and_results_read_back(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path / "run")
    run = RunDir(tmp_path / "run")
    assert run.metrics() == [] and not run.finished and run.config() == {}
    writer.row(ROWS[0])
    assert run.metrics() == ROWS[:1]  # flushed as the round ends: readable during the run
    writer.rewrite(ROWS[:2])  # a resumed run writes its checkpoint's rows again
    writer.row(ROWS[2])
    writer.results({"config": {"num_clients": 3}, "final": {"accuracy": 0.8}})
    assert run.metrics() == ROWS
    assert run.finished and run.results()["final"] == {"accuracy": 0.8}
    assert run.config() == {"num_clients": 3}
    assert run.model_path == tmp_path / "run" / "model.keras"
    lines = run.metrics_path.read_text().splitlines()
    assert lines == [json.dumps(r) for r in ROWS]  # one compact JSON object a line
    assert run.results_path.read_text().endswith("}\n")
    frame = run.metrics_frame()
    assert list(frame["round"]) == [1, 2, 3] and frame["accuracy"].iloc[-1] == ROWS[2]["accuracy"]
    assert [r.path for r in find_runs(tmp_path)] == [run.path]


def test_overrides_are_hydras_record_or_none(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.overrides() is None
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- seed=1\n- strategy=fedprox\n")
    assert run.overrides() == ["seed=1", "strategy=fedprox"]


def test_unreadable_files_are_data_errors(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    with pytest.raises(DataError, match="cannot read the run in"):
        run.results()
    run.metrics_path.write_text('{"round": 1}\nnot json\n')
    with pytest.raises(DataError, match="cannot read the run in"):
        run.metrics()


ROW = {
    "round": 2,
    "loss": 0.5,
    "accuracy": 0.75,
    "fed_loss": None,
    "fed_accuracy": 0.7,
    "bytes_down": 2048,
    "bytes_up": 100,
    "seconds": 1.25,
}


def test_round_line_with_and_without_feature_fields() -> None:
    assert round_line(ROW, 5) == (
        "round   2/5 | test loss 0.5000 acc 0.7500 | fed loss   -    acc 0.7000 | "
        "down   2.0 KiB up     100 B | 1.2s"
    )
    row = {**ROW, "virtual_time": 3.0, "compression_up": 4.0, "failed": 1, "epsilon": 1.5}
    assert round_suffix(row) == (" | t=3.0s | compression up 4.0x down - | failed 1 | eps 1.500")


def test_a_registered_field_adds_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fields_module, "FIELDS", list(fields_module.FIELDS))
    field = Field("votes", lambda row: f" | votes {row['votes']}", lambda r: [("votes", "7")])
    fields_module.register(field)
    fields_module.register(field)  # once only
    assert round_suffix({"votes": 7}) == " | votes 7"
    assert summary_rows({}) == [("votes", "7")]


def test_in_jupyter_the_progress_is_a_bar_updated_in_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from rich import console

    from fedflower.outputs.console import ConsoleSink, NotebookProgress

    monkeypatch.setattr(console, "_is_jupyter", lambda: True)
    sink = ConsoleSink(tmp_path, num_rounds=4)
    assert isinstance(sink._progress, NotebookProgress)
    updates: list[dict[str, str]] = []
    sink._progress._handle = type("Handle", (), {"update": lambda _, d, raw: updates.append(d)})()
    sink.restored(1)
    sink._progress.advance(sink._task)
    assert updates[-1]["text/html"].startswith('<progress value="2" max="4">')
    assert updates[-1]["text/plain"] == "federated training 2/4 rounds"
