"""What each feature adds to the console: a suffix of the round line, rows of the summary.

A feature (the latency clock, asynchronous training, compression, straggler replies, privacy)
puts its numbers in the round's row and in ``results.json`` under its own keys; its
:class:`Field` says how they read on the console. The console sink knows no feature's keys:
it asks every field in :data:`FIELDS`, in order. A plugin feature adds its own with
:func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedflower.outputs.per_client import per_client_lines

Row = dict[str, Any]


@dataclass(frozen=True)
class Field:
    """A feature's console text.

    Attributes
    ----------
    name : str
        The feature (for reading and for tests).
    round_text : callable
        ``row -> str``: the suffix of the round line (``""`` when the feature is off).
    summary : callable
        ``results -> [(label, value), ...]``: rows of the final summary table.
    """

    name: str
    round_text: Callable[[Row], str] = lambda row: ""
    summary: Callable[[Row], list[tuple[str, str]]] = lambda results: []


def ratio(value: float | None) -> str:
    """A compression ratio (``4.0x``) or ``-``."""
    return "-" if value is None else f"{value:.1f}x"


def _clock_round(row: Row) -> str:
    return f" | t={row['virtual_time']:.1f}s" if row.get("virtual_time") is not None else ""


def _clock_summary(results: Row) -> list[tuple[str, str]]:
    if results.get("virtual_time") is None:
        return []
    return [("virtual time (latency model)", f"{results['virtual_time']:.1f} s")]


def _async_round(row: Row) -> str:
    if row.get("staleness_mean") is None:
        return ""
    return f" | staleness {row['staleness_mean']:.1f} (max {row['staleness_max']})"


def _async_summary(results: Row) -> list[tuple[str, str]]:
    if "async" not in results:
        return []
    a = results["async"]
    counts = f"{a['tasks']} / {a['folded']} / {a['dropped']} / {a['failed']}"
    return [("client tasks / folded / dropped / failed", counts)]


def _compression_round(row: Row) -> str:
    up, down = row.get("compression_up"), row.get("compression_down")
    if up is None and down is None:
        return ""
    return f" | compression up {ratio(up)} down {ratio(down)}"


def _compression_summary(results: Row) -> list[tuple[str, str]]:
    up, down = results.get("compression_up"), results.get("compression_down")
    if not (up or down):
        return []
    return [("compression up / down (bytes uncompressed / sent)", f"{ratio(up)} / {ratio(down)}")]


def _replies_round(row: Row) -> str:
    text = f" | dropped {row['dropped']}" if row.get("dropped") else ""
    return text + (f" | failed {row['failed']}" if row.get("failed") else "")


def _deadline_round(row: Row) -> str:
    text = " | round skipped (no quorum)" if row.get("skipped") else ""
    for key in ("train_missing", "train_late", "train_failed"):
        if row.get(key):
            text += f" | {key.split('_')[1]} nodes {row[key]}"
    return text


def _privacy_round(row: Row) -> str:
    if row.get("epsilon") is None:
        return ""
    delta = row.get("delta")
    return f" | eps {row['epsilon']:.3f}" + ("" if delta is None else f" (delta {delta:.0e})")


def _privacy_summary(results: Row) -> list[tuple[str, str]]:
    if "privacy" not in results:
        return []
    p = results["privacy"]
    stop = p.get("stopped_for_budget_after")
    return [
        (
            f"privacy ({p['mode']}, {p['adjacency'].split(',')[0]})",
            f"epsilon {p['epsilon']:.3f} at delta {p['delta']:.0e}"
            + (f"; budget stop after round {stop}" if stop else ""),
        )
    ]


FIELDS: list[Field] = [
    Field("clock", _clock_round, _clock_summary),
    Field("async", _async_round, _async_summary),
    Field("compression", _compression_round, _compression_summary),
    Field("replies", _replies_round),
    Field("deadline", _deadline_round),
    Field("privacy", _privacy_round, _privacy_summary),
    Field("per_client", summary=lambda results: per_client_lines(results.get("per_client"))),
]
"""The console fields, in the order they print."""


def register(field: Field) -> None:
    """Add a feature's console field (after the built-in ones); a name is registered once."""
    if all(f.name != field.name for f in FIELDS):
        FIELDS.append(field)


def round_suffix(row: Row) -> str:
    """The features' part of a round line."""
    return "".join(f.round_text(row) for f in FIELDS)


def summary_rows(results: Row) -> list[tuple[str, str]]:
    """The features' rows of the summary table."""
    return [r for f in FIELDS for r in f.summary(results)]
