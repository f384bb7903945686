"""The recorder on its own: round lines, metrics.jsonl, results.json, the summary, plots on/off,
non-finite federated evaluations dropped and counted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from flwr.app import MetricRecord, RecordDict

from fedflower import keys
from fedflower.outputs import RunDir
from fedflower.server.recorder import Recorder, human_bytes


def replies(*metrics: dict[str, float]) -> list[RecordDict]:
    """Reply contents as the aggregation hooks receive them (one metric record each)."""
    return [RecordDict({"metrics": MetricRecord(m)}) for m in metrics]


def two_rounds(out: Path) -> Recorder:
    """Initial evaluation and two rounds; round 1 with train and federated metrics."""
    recorder = Recorder(out, num_rounds=2, progress=False)
    recorder.start()
    recorder.round_end(0, loss=0.9, accuracy=0.5, bytes_down=0, bytes_up=0)
    train = recorder.train_metrics_hook()
    fed = recorder.evaluate_metrics_hook()
    train(replies({keys.TRAIN_LOSS: 0.6, "n": 1}, {keys.TRAIN_LOSS: 0.3, "n": 2}), "n")
    fed(replies({keys.EVAL_LOSS: 0.5, keys.EVAL_ACCURACY: 0.7, "n": 3}), "n")
    recorder.round_end(1, loss=0.4, accuracy=0.8, bytes_down=3072, bytes_up=1024)
    recorder.round_end(2, loss=0.35, accuracy=0.85, bytes_down=3072, bytes_up=1024, dropped=2)
    return recorder


def test_round_lines_show_the_round_metrics_bytes_and_extras(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two_rounds(tmp_path)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("round")]
    assert len(lines) == 2  # the initial evaluation prints no round line
    assert lines[0].startswith("round   1/2 | test loss 0.4000 acc 0.8000 | fed loss 0.5000")
    assert "acc 0.7000 | down   3.0 KiB up   1.0 KiB |" in lines[0]
    assert "fed loss   -    acc   -   " in lines[1]  # no federated evaluation in round 2
    assert lines[1].endswith("| dropped 2") and "dropped" not in lines[0]


def test_metrics_jsonl_has_one_row_per_round_with_the_hooks_values(tmp_path: Path) -> None:
    recorder = two_rounds(tmp_path)
    rows = RunDir(tmp_path).metrics()
    assert rows == recorder.rows
    assert [r["round"] for r in rows] == [1, 2]
    first, second = rows
    assert first["train_loss"] == pytest.approx((0.6 * 1 + 0.3 * 2) / 3)  # weighted by "n"
    assert (first["fed_loss"], first["fed_accuracy"]) == (0.5, 0.7)
    # the hooks' values belong to one round only
    assert second["train_loss"] is second["fed_loss"] is second["fed_accuracy"] is None
    assert second["dropped"] == 2 and "dropped" not in first
    assert first["elapsed"] <= second["elapsed"]
    assert second["elapsed"] == pytest.approx(first["seconds"] + second["seconds"], abs=1e-3)


def test_results_json_totals_communication_and_extras(tmp_path: Path) -> None:
    recorder = two_rounds(tmp_path)
    results = recorder.finish(
        {"num_rounds": 2}, model_bytes=1000, num_clients=3, plots=False, virtual_time=12.5
    )
    assert RunDir(tmp_path).results() == results
    assert results["config"] == {"num_rounds": 2}
    assert results["initial"] == {"loss": 0.9, "accuracy": 0.5}
    assert results["final"] == {"loss": 0.35, "accuracy": 0.85}
    totals = results["totals"]
    assert (totals["rounds"], totals["bytes_down"], totals["bytes_up"]) == (2, 6144, 2048)
    comm = results["communication"]
    assert comm["naive_estimate_bytes"] == 3 * 1000 * 2
    assert comm["measured_bytes"] == 6144 + 2048
    assert results["virtual_time"] == 12.5


def test_summary_prints_the_final_metrics_and_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder = two_rounds(tmp_path)
    capsys.readouterr()
    recorder.finish({}, model_bytes=1000, num_clients=3, plots=False)
    summary = capsys.readouterr().out
    assert "0.3500 / 0.8500" in summary
    assert human_bytes(6144) in summary and human_bytes(2048) in summary
    assert human_bytes(8192) in summary  # measured total


@pytest.mark.parametrize("plots", [False, True])
def test_plot_is_written_only_when_asked(tmp_path: Path, plots: bool) -> None:
    two_rounds(tmp_path).finish({}, model_bytes=1, num_clients=1, plots=plots)
    assert (tmp_path / "history.png").is_file() is plots
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".png") == [
        "metrics.jsonl",
        "results.json",
    ]


def test_a_run_without_rounds_still_writes_results(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, num_rounds=3, progress=False)
    recorder.round_end(0, loss=0.7, accuracy=0.5, bytes_down=0, bytes_up=0)
    results = recorder.finish({}, model_bytes=10, num_clients=2, plots=True)
    assert results["final"] == {"loss": None, "accuracy": None}
    assert results["totals"]["rounds"] == 0
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    assert not (tmp_path / "history.png").exists()  # nothing to plot


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 1024**3, "3.0 GiB")]
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def evaluation(loss: float, accuracy: float, n: int) -> RecordDict:
    record = {keys.EVAL_LOSS: loss, keys.EVAL_ACCURACY: accuracy, keys.NUM_EXAMPLES: n}
    return RecordDict({keys.METRICS: MetricRecord(record)})


def test_nonfinite_evaluations_are_dropped_counted_and_not_averaged(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, num_rounds=2, progress=False)
    hook = recorder.evaluate_metrics_hook()
    rounds = [
        [evaluation(0.5, 0.8, 10), evaluation(math.nan, 0.7, 10), evaluation(0.3, 0.6, 30)],
        [evaluation(0.2, math.inf, 10), evaluation(0.4, 0.9, 10)],
    ]
    for rnd, contents in enumerate(rounds, start=1):
        hook(contents, keys.NUM_EXAMPLES)
        recorder.round_end(rnd, 0.1, 0.9, 0, 0)
    results = recorder.finish({}, model_bytes=1, num_clients=3, plots=False)
    rows = RunDir(tmp_path).metrics()
    assert rows[0]["fed_loss"] == pytest.approx((0.5 * 10 + 0.3 * 30) / 40, rel=1e-12)
    assert rows[0]["fed_accuracy"] == pytest.approx((0.8 * 10 + 0.6 * 30) / 40, rel=1e-12)
    assert rows[1]["fed_loss"] == 0.4 and rows[1]["fed_accuracy"] == 0.9
    assert [r["eval_dropped"] for r in rows] == [1, 1]
    assert results["totals"]["eval_dropped"] == 2


def test_rows_without_dropped_evaluations_have_no_count(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, num_rounds=1, progress=False)
    recorder.evaluate_metrics_hook()([evaluation(0.5, 0.8, 10)], keys.NUM_EXAMPLES)
    row = recorder.round_end(1, 0.1, 0.9, 0, 0)
    assert "eval_dropped" not in row and row["fed_loss"] == 0.5


def test_only_nonfinite_evaluations_give_no_federated_metrics(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, num_rounds=1, progress=False)
    recorder.evaluate_metrics_hook()([evaluation(math.nan, 0.8, 10)], keys.NUM_EXAMPLES)
    row = recorder.round_end(1, 0.1, 0.9, 0, 0)
    assert row["fed_loss"] is None and row["eval_dropped"] == 1
