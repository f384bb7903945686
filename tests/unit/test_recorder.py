"""Recorder: federated evaluations with NaN or infinite values are dropped and counted."""

from __future__ import annotations

import json
import math

import pytest
from flwr.app import MetricRecord, RecordDict

from fedflower import keys
from fedflower.server.recorder import Recorder


def evaluation(loss: float, accuracy: float, n: int) -> RecordDict:
    record = {keys.EVAL_LOSS: loss, keys.EVAL_ACCURACY: accuracy, keys.NUM_EXAMPLES: n}
    return RecordDict({keys.METRICS: MetricRecord(record)})


def test_nonfinite_evaluations_are_dropped_counted_and_not_averaged(tmp_path) -> None:
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
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["fed_loss"] == pytest.approx((0.5 * 10 + 0.3 * 30) / 40, rel=1e-12)
    assert rows[0]["fed_accuracy"] == pytest.approx((0.8 * 10 + 0.6 * 30) / 40, rel=1e-12)
    assert rows[1]["fed_loss"] == 0.4 and rows[1]["fed_accuracy"] == 0.9
    assert [r["eval_dropped"] for r in rows] == [1, 1]
    assert results["totals"]["eval_dropped"] == 2


def test_rows_without_dropped_evaluations_have_no_count(tmp_path) -> None:
    recorder = Recorder(tmp_path, num_rounds=1, progress=False)
    recorder.evaluate_metrics_hook()([evaluation(0.5, 0.8, 10)], keys.NUM_EXAMPLES)
    row = recorder.round_end(1, 0.1, 0.9, 0, 0)
    assert "eval_dropped" not in row and row["fed_loss"] == 0.5


def test_only_nonfinite_evaluations_give_no_federated_metrics(tmp_path) -> None:
    recorder = Recorder(tmp_path, num_rounds=1, progress=False)
    recorder.evaluate_metrics_hook()([evaluation(math.nan, 0.8, 10)], keys.NUM_EXAMPLES)
    row = recorder.round_end(1, 0.1, 0.9, 0, 0)
    assert row["fed_loss"] is None and row["eval_dropped"] == 1
