"""Reading Flower's ``RecordDict`` on the server's per-reply paths.

``RecordDict.metric_records`` (and ``array_records``, ``config_records``) build a new, type
checked dict at every access; a round reads them several times per reply. These helpers
read the records in place and give the same values.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from flwr.app import MetricRecord, RecordDict

R = TypeVar("R")


def records_of(content: RecordDict, kind: type[R]) -> list[R]:
    """The records of type ``kind`` in ``content``, in its order (``content.<kind>s.values()``)."""
    return [record for record in content.values() if isinstance(record, kind)]


def record_of(content: RecordDict, key: str, kind: type[R]) -> R | None:
    """The record ``key`` of ``content`` if it is a ``kind`` (``content.<kind>s.get(key)``)."""
    record = content.get(key)
    return record if isinstance(record, kind) else None


def aggregate_metricrecords(records: list[RecordDict], weighting_metric_name: str) -> MetricRecord:
    """Flower's ``strategy_utils.aggregate_metricrecords``, its sums in its order, read in place.

    The weighted mean of every metric of ``records``' metric records, weighted by the first
    metric record's ``weighting_metric_name``, which is left out of the result; lists are
    averaged item by item. Equal to Flower's, value for value
    (``tests/unit/test_records.py``).
    """
    metrics = [records_of(record, MetricRecord) for record in records]
    weights = [cast(float, found[0][weighting_metric_name]) for found in metrics]
    total_weight = sum(weights)
    factors = [w / total_weight for w in weights]
    out: dict[str, Any] = {}
    for found, weight in zip(metrics, factors, strict=True):
        for record in found:
            for key, value in record.items():
                if key == weighting_metric_name:
                    continue
                if key not in out:
                    out[key] = (
                        [v * weight for v in value] if isinstance(value, list) else value * weight
                    )
                elif isinstance(value, list):
                    out[key] = [c + v * weight for c, v in zip(out[key], value, strict=True)]
                else:
                    out[key] = out[key] + value * weight
    return MetricRecord(out)
