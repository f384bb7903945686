"""The run summary: the naive traffic estimate where it applies, the whole output path."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from fedflower.server.recorder import Recorder


@pytest.mark.parametrize("asynchronous", [False, True])
def test_summary_names_the_estimate_and_prints_the_whole_path(
    tmp_path: Path, asynchronous: bool
) -> None:
    out = tmp_path / ("a-very-long-directory-name-" * 4) / "run"
    out.mkdir(parents=True)
    recorder = Recorder(out, num_rounds=1, progress=False)
    recorder.console = Console(width=80, record=True, force_terminal=False)
    extra = {"async": {"tasks": 4, "folded": 3, "dropped": 1, "failed": 0}} if asynchronous else {}
    results = recorder.finish({}, model_bytes=100, num_clients=3, plots=False, **extra)
    text = recorder.console.export_text()
    assert ("naive estimate: clients x model bytes x rounds" in text) is not asynchronous
    assert "seed" not in text
    assert f"outputs: {out.resolve()}" in text  # one line, though longer than 80 columns
    assert results["communication"]["naive_estimate"] == "clients x model bytes x rounds"
