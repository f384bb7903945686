"""A node's side of the federated statistics of a table: summaries of its rows, never a row.

Before training the server sends every node two query messages
(:mod:`fedflower.server.preprocessing`):

1. ``statistics``: the table's columns (names, roles) and a clip bound per numeric column. The
   node reads its own raw rows (a simulated client's partition, a SuperNode's ``data-path``)
   and replies with their sufficient statistics — per numeric column the count of filled
   cells, their sum, their sum of squares and the count of empty cells; per categorical column
   the count of each value (:func:`fedflower.aggregation.preprocessing.statistics`). With a
   noise multiplier above 0 (``privacy=`` on) the values are clipped to the bounds and every
   statistic is noised before it leaves the node
   (:func:`fedflower.aggregation.preprocessing.noised`).
2. ``preprocessing``: the preprocessing fitted on the merged statistics. The node keeps it in
   its ``Context.state`` (kept by the simulation engines and by SuperNodes alike) and turns
   its raw rows into the model's features with it (:func:`prepared`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedflower import keys
from fedflower.aggregation import preprocessing
from fedflower.data.source import ClientData, Columns

RawData = Callable[[Context, Columns], tuple[ClientData, Columns]]
"""``raw(context, columns)``: the node's raw-encoded rows and the columns their codes use.

``columns`` are the server's; the node's own file may hold other categories, so the
returned columns name the categories the node's codes index.
"""


def _config(msg: Message) -> ConfigRecord:
    return msg.content.config_records[keys.CONFIG]


def node_seed(context: Context) -> int:
    """A node's seed for its noise: its partition id in simulation, else its node id."""
    pid = context.node_config.get(keys.PARTITION_ID)
    return int(pid) if pid is not None else int(context.node_id)


def summary(msg: Message, context: Context, raw: RawData) -> preprocessing.Statistics:
    """The statistics of the node's training rows the query asks for (noised if asked)."""
    config = _config(msg)
    columns = Columns.from_dict(json.loads(str(config[keys.COLUMNS])))
    data, local = raw(context, columns)
    numeric, categorical = preprocessing.split_raw(data.x_train, local.categories)
    multiplier = float(config[keys.NOISE_MULTIPLIER])  # type: ignore[arg-type]
    if multiplier <= 0:
        return preprocessing.statistics(numeric, categorical)
    limits = msg.content.array_records[keys.BOUNDS][keys.BOUNDS].numpy()
    stats = preprocessing.statistics(preprocessing.clipped(numeric, limits), categorical)
    rng = np.random.default_rng([int(str(config[keys.NOISE_SEED])), node_seed(context)])
    return preprocessing.noised(stats, multiplier, limits, rng)


def statistics_reply(msg: Message, context: Context, raw: RawData) -> Message:
    """Reply to a ``statistics`` query: arrays of counts and sums, category counts as JSON."""
    stats = summary(msg, context, raw)
    arrays = ArrayRecord({name: Array(value) for name, value in stats.arrays().items()})
    counts = ConfigRecord({keys.CATEGORIES: json.dumps(stats.categories)})
    content = RecordDict({keys.STATISTICS: arrays, keys.CATEGORIES: counts})
    return Message(content, reply_to=msg)


def keep_reply(msg: Message, context: Context) -> Message:
    """Keep the fitted preprocessing of a ``preprocessing`` message in ``Context.state``."""
    config = _config(msg)
    context.state[keys.PREPROCESSING] = ConfigRecord(
        {keys.COLUMNS: config[keys.COLUMNS], keys.FITTED: config[keys.FITTED]}
    )
    return Message(RecordDict(), reply_to=msg)


def query_handler(raw: RawData) -> Callable[[Message, Context], Message]:
    """The ``ClientApp``'s query function: statistics, or the fitted preprocessing to keep."""

    def handle(msg: Message, context: Context) -> Message:
        kind = _config(msg).get(keys.QUERY_KIND)
        if kind == keys.STATISTICS:
            return statistics_reply(msg, context, raw)
        if kind == keys.PREPROCESSING:
            return keep_reply(msg, context)
        raise ValueError(f"query kind {kind!r} is unknown to this node")

    return handle


def kept(context: Context) -> tuple[Columns, preprocessing.Fitted, int] | None:
    """The server's columns and fitted preprocessing this node keeps (and a digest of them)."""
    record = context.state.get(keys.PREPROCESSING)
    if not isinstance(record, ConfigRecord):
        return None
    columns, fitted = str(record[keys.COLUMNS]), str(record[keys.FITTED])
    digest = zlib.crc32((columns + fitted).encode())
    parsed = preprocessing.Fitted.from_dict(json.loads(fitted))
    return Columns.from_dict(json.loads(columns)), parsed, digest


def prepared(data: ClientData, local: Columns, fitted: preprocessing.Fitted) -> ClientData:
    """The node's raw rows as the model's features."""

    def encode(x: np.ndarray) -> np.ndarray:
        return preprocessing.features(fitted, x, local.categories)

    return replace(data, x_train=encode(data.x_train), x_val=encode(data.x_val))
