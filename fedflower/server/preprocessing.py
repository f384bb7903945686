"""A table's preprocessing fitted on statistics the nodes send in one message round.

Before training the server sends each node a query message (Flower's ``query`` message type,
through the run's grid: the in-process engine in simulation, the SuperLink in a
deployment). Each node replies with the sufficient statistics of its own training rows
(:mod:`fedflower.client.statistics`: counts, sums, sums of squares, category counts — no
row); the server merges them, fits the preprocessing
(:mod:`fedflower.aggregation.preprocessing`) and sends it back in a second query message,
which each node keeps and applies to its rows. The bytes of both exchanges are metered
(:class:`~fedflower.engine.metered.MeteredGrid`) and reported under ``statistics`` in
``results.json``.

With ``privacy=`` on, every node clips its numeric values to bounds the server takes from
its own rows (the central test set) and adds Gaussian noise to each statistic before it
leaves the node, with std = noise multiplier x what one row can change that statistic
(:func:`fedflower.aggregation.preprocessing.noised`). The noise multiplier is the privacy
mode's ``noise_multiplier`` (``local_dp``: ``sqrt(2 ln(1.25 / delta)) / epsilon``, the
Gaussian mechanism's). The saved model carries the fitted steps as Keras layers in front
(:mod:`fedflower.model_inputs`), so it takes raw rows.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedflower import keys
from fedflower.aggregation import preprocessing
from fedflower.data.source import Columns, TabularSource
from fedflower.engine.metered import MeteredGrid
from fedflower.errors import DataError

log = logging.getLogger(__name__)

NODES_WAIT = 300.0
"""Seconds the server waits for the federation's nodes to connect before the query."""


def noise_multiplier(privacy: dict[str, Any] | None) -> float:
    """The std of the statistics' noise per unit of sensitivity for a ``privacy`` group."""
    options = privacy or {}
    name = options.get("name", "none")
    if name == "none":
        return 0.0
    if name == "local_dp":
        delta, epsilon = float(options["local_delta"]), float(options["local_epsilon"])
        return math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon
    return float(options["noise_multiplier"])


@dataclass(frozen=True)
class Query:
    """What the statistics round needs besides the grid and the dataset.

    Parameters
    ----------
    num_nodes : int
        Nodes to ask (the run's ``num_clients``).
    privacy : dict, optional
        The ``privacy`` config group (noise when on, see :func:`noise_multiplier`).
    seed : int
        Seed of the nodes' noise.
    timeout : float, optional
        Seconds to wait for the replies (``None``: as long as it takes).
    """

    num_nodes: int
    privacy: dict[str, Any] | None = None
    seed: int = 0
    timeout: float | None = None


def _config(kind: str, columns: Columns, **fields: Any) -> ConfigRecord:
    return ConfigRecord(
        {keys.QUERY_KIND: kind, keys.COLUMNS: json.dumps(columns.as_dict()), **fields}
    )


def _messages(nodes: list[int], content: RecordDict) -> list[Message]:
    return [
        Message(content, dst_node_id=node, message_type=MessageType.QUERY, group_id="0")
        for node in nodes
    ]


def wait_for_nodes(grid: Grid, num_nodes: int, wait: float = NODES_WAIT) -> list[int]:
    """The first ``num_nodes`` node ids of the federation, once that many have connected."""
    deadline = time.monotonic() + wait
    while len(nodes := sorted(grid.get_node_ids())) < num_nodes and time.monotonic() < deadline:
        time.sleep(0.5)
    if len(nodes) < num_nodes:
        raise DataError(
            f"{len(nodes)} of num_clients={num_nodes} nodes connected within {wait:.0f} s; "
            "the table's statistics need every node: start the missing SuperNodes"
        )
    return nodes[:num_nodes]


def replies(grid: Grid, messages: list[Message], timeout: float | None) -> list[Message]:
    """The nodes' good replies; a failed or silent node is logged in one line and left out.

    As in a training round, the other nodes go on (the failed node's error will come back
    from its training messages too); no good reply at all is a ``DataError``.
    """
    received = list(grid.send_and_receive(messages, timeout=timeout))
    good = [r for r in received if not r.has_error()]
    for reply in received:
        if reply.has_error():
            log.warning(
                "node %s failed the table query: %s", reply.metadata.src_node_id, reply.error.reason
            )
    if len(received) < len(messages):
        log.warning(
            "%d of %d nodes did not reply to the table query within %s s",
            len(messages) - len(received),
            len(messages),
            timeout,
        )
    if not good:
        reasons = "; ".join(str(r.error.reason) for r in received if r.has_error())
        raise DataError(f"no node could summarise its table ({reasons or 'no reply'})")
    return good


def decode(reply: Message) -> preprocessing.Statistics:
    """A node's statistics from its reply."""
    arrays = reply.content.array_records[keys.STATISTICS]
    counts = json.loads(str(reply.content.config_records[keys.CATEGORIES][keys.CATEGORIES]))
    return preprocessing.Statistics.from_arrays(
        {name: arrays[name].numpy() for name in arrays}, counts
    )


def gather(
    grid: Grid, nodes: list[int], columns: Columns, limits: np.ndarray, query: Query
) -> list[preprocessing.Statistics]:
    """Ask every node in ``nodes`` for the statistics of its rows; return them in node order."""
    multiplier = noise_multiplier(query.privacy)
    content = RecordDict(
        {
            keys.CONFIG: _config(
                keys.STATISTICS,
                columns,
                **{keys.NOISE_MULTIPLIER: multiplier, keys.NOISE_SEED: int(query.seed)},
            ),
            keys.BOUNDS: ArrayRecord({keys.BOUNDS: Array(np.asarray(limits, np.float64))}),
        }
    )
    received = replies(grid, _messages(nodes, content), query.timeout)
    return [decode(r) for r in received]


def hand_out(
    grid: Grid, nodes: list[int], columns: Columns, fitted: preprocessing.Fitted, query: Query
) -> None:
    """Send every node the fitted preprocessing (it keeps it in its ``Context.state``)."""
    config = _config(keys.PREPROCESSING, columns, **{keys.FITTED: json.dumps(fitted.as_dict())})
    replies(grid, _messages(nodes, RecordDict({keys.CONFIG: config})), query.timeout)


def server_bounds(source: TabularSource, columns: Columns) -> np.ndarray:
    """Clip bounds of the numeric columns from the server's own rows (its test set)."""
    numeric, _ = preprocessing.split_raw(source.x_test, columns.categories)
    return preprocessing.bounds(numeric)


def report(meter: MeteredGrid, parts: list[preprocessing.Statistics], query: Query) -> dict:
    """The ``statistics`` entry of ``results.json``: nodes, bytes and the noise added."""
    down, up = meter.take()
    multiplier = noise_multiplier(query.privacy)
    noise = (
        "none"
        if multiplier <= 0
        else f"Gaussian, std {multiplier:.4g} x sensitivity (1 per count; the clip bound per "
        "sum; its square per sum of squares), added on each node"
    )
    return {
        "nodes": len(parts),
        "rows": int(sum(p.rows for p in parts)),
        "bytes_down": int(down),
        "bytes_up": int(up),
        "noise_multiplier": multiplier,
        "noise": noise,
    }


def federate(grid: Grid, source: TabularSource, query: Query) -> TabularSource:
    """Fit ``source``'s preprocessing on its nodes' statistics; return it applied.

    The returned dataset's test set (and training pool, for its shape) are features; its
    ``preprocessing`` holds the fitted steps and, under ``statistics``, :func:`report`.
    A dataset without table columns, or already prepared, is returned as is.
    """
    columns = source.columns
    if columns is None or source.preprocessing is not None:
        return source
    meter = MeteredGrid(grid)
    nodes = wait_for_nodes(meter, query.num_nodes)
    limits = server_bounds(source, columns)
    parts = gather(meter, nodes, columns, limits, query)
    merged = preprocessing.merge(parts)
    fitted = preprocessing.fit(merged, columns.normalize, columns.missing_indicator)
    hand_out(meter, nodes, columns, fitted, query)
    stats = report(meter, parts, query)
    if stats["noise_multiplier"] > 0:
        log.warning(
            "privacy is on: each node noised its table statistics (%s); normalisation, fill "
            "values and most frequent categories carry that noise",
            stats["noise"],
        )
    log.info(
        "preprocessing fitted from %d nodes' statistics (%d rows, no row sent; %d bytes down, "
        "%d up; noise: %s): %d numeric, %d categorical columns -> %d features",
        stats["nodes"],
        stats["rows"],
        stats["bytes_down"],
        stats["bytes_up"],
        stats["noise"],
        len(columns.numeric),
        len(columns.categorical),
        fitted.width,
    )
    return replace(
        source,
        x=preprocessing.features(fitted, source.x, columns.categories),
        x_test=preprocessing.features(fitted, source.x_test, columns.categories),
        preprocessing={**fitted.as_dict(), keys.STATISTICS: stats},
    )
