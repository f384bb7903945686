"""fedflower.outputs.tracking: the recorder's sinks, TensorBoard event files, W&B offline."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from fedflower.errors import ConfigError
from fedflower.outputs.tracking import TensorBoardSink, build_sinks, scalars
from fedflower.server.recorder import Recorder
from fedflower.server.rules import validate


class ListSink:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.results: Mapping[str, Any] | None = None

    def log_round(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))

    def close(self, results: Mapping[str, Any]) -> None:
        self.results = results


def record_two_rounds(out: Path, sinks: list[Any]) -> Recorder:
    recorder = Recorder(out, 2, progress=False, sinks=sinks)
    recorder.start()
    recorder.round_end(0, 0.7, 0.5, 0, 0)
    recorder.round_end(1, 0.6, 0.61, 1000, 900, staleness_mean=1.5, staleness_max=3)
    recorder.round_end(2, 0.5, 0.72, 1000, 900, epsilon=0.8, dropped=True)
    recorder.finish({"seed": 0}, model_bytes=100, num_clients=2, plots=False)
    return recorder


def test_scalars_keep_numbers_only() -> None:
    row = {"round": 3, "loss": 0.5, "bytes_up": 10, "fed_loss": None, "flag": True, "name": "x"}
    assert scalars(row) == {"loss": 0.5, "bytes_up": 10.0}


def test_recorder_feeds_every_round_and_the_results_to_its_sinks(tmp_path: Path) -> None:
    sink = ListSink()
    recorder = record_two_rounds(tmp_path, [sink])
    assert sink.rows == recorder.rows  # round 0 (initial model) is not a row
    assert sink.results is not None and sink.results["final"]["accuracy"] == 0.72


def test_tensorboard_event_files_hold_every_numeric_field(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record_two_rounds(tmp_path, [TensorBoardSink(tmp_path / "tensorboard")])
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"loss", "accuracy", "bytes_down", "bytes_up", "seconds", "elapsed"} <= tags
    assert {"staleness_mean", "staleness_max", "epsilon"} <= tags
    assert "dropped" not in tags and "round" not in tags

    def series(tag: str) -> list[tuple[int, float]]:
        return [(e.step, float(e.tensor_proto.float_val[0])) for e in events.Tensors(tag)]

    assert series("accuracy") == [(1, pytest.approx(0.61)), (2, pytest.approx(0.72))]
    assert series("bytes_up") == [(1, 900.0), (2, 900.0)]
    assert series("epsilon") == [(2, pytest.approx(0.8))]


def test_tensorboard_is_on_unless_switched_off(tmp_path: Path) -> None:
    assert [type(s) for s in build_sinks(None, tmp_path, {})] == [TensorBoardSink]
    assert [type(s) for s in build_sinks({"name": "none"}, tmp_path, {})] == [TensorBoardSink]
    assert build_sinks({"name": "none", "tensorboard": False}, tmp_path, {}) == []


def test_unknown_tracker(tmp_path: Path) -> None:
    message = r"tracking\.name must be one of none, wandb, got 'mlflow'"
    with pytest.raises(ConfigError, match=message):
        build_sinks({"name": "mlflow"}, tmp_path, {})


def test_bad_wandb_mode_is_caught_by_validation(tiny_cfg: Callable[..., DictConfig]) -> None:
    cfg = tiny_cfg("tracking=wandb", "tracking.mode=loud")
    with pytest.raises(
        ConfigError, match=r"tracking\.mode must be one of offline, online, disabled"
    ):
        validate(cfg)


@pytest.mark.slow  # W&B starts its service process: about 10 s
def test_wandb_offline_run_is_written_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    options = {"name": "wandb", "tensorboard": False, "project": "test", "mode": "offline"}
    sinks = build_sinks(options, tmp_path, {"seed": 0})
    record_two_rounds(tmp_path / "run", sinks)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))


def test_wandb_missing_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # wandb not installed
    with pytest.raises(ConfigError, match=r"tracking=wandb needs the wandb package"):
        build_sinks({"name": "wandb", "tensorboard": False}, tmp_path, {})
