"""fedflower.records: Flower's RecordDict views and metric aggregation, read in place."""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords as flowers

from fedflower.records import aggregate_metricrecords, record_of, records_of


def contents(seed: int, n: int) -> list[RecordDict]:
    """Replies with an int weight, float and int metrics, a list metric, a second record."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        metrics = {
            "num-examples": int(rng.integers(1, 1000)),
            "loss": float(rng.random() * 3),
            "accuracy": float(rng.random()),
            "count": int(rng.integers(0, 10)),
            "per_class": [float(v) for v in rng.random(3)],
        }
        out.append(
            RecordDict(
                {
                    "metrics": MetricRecord(metrics),  # type: ignore[arg-type]
                    "config": ConfigRecord({"note": "x"}),
                    "extra": MetricRecord({"seconds": float(rng.random())}),
                }
            )
        )
    return out


def test_the_weighted_mean_is_flowers_value_for_value() -> None:
    for seed, n in ((0, 1), (1, 2), (2, 24), (3, 100)):
        records = contents(seed, n)
        ours, theirs = (
            aggregate_metricrecords(records, "num-examples"),
            flowers(records, "num-examples"),
        )
        assert dict(ours) == dict(theirs)  # exact: the same sums in the same order
        assert "num-examples" not in ours and set(ours) == {
            "loss", "accuracy", "count", "per_class", "seconds",
        }  # fmt: skip


def test_the_views_read_in_place_give_flowers() -> None:
    content = contents(4, 1)[0]
    content["arrays"] = ArrayRecord([np.ones(3, dtype=np.float32)])
    assert records_of(content, MetricRecord) == list(content.metric_records.values())
    assert records_of(content, ArrayRecord) == list(content.array_records.values())
    assert record_of(content, "metrics", MetricRecord) is content["metrics"]
    assert record_of(content, "config", MetricRecord) is None  # another kind
    assert record_of(content, "absent", MetricRecord) is None
    assert records_of(contents(5, 1)[0], ArrayRecord) == []
