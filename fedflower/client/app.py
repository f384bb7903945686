"""The one adapter from a NumPyClient-shaped :class:`KerasClient` to Flower's Message API."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import keras
import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from fedflower import keys
from fedflower.client.compression import compression_mod
from fedflower.client.dynamic import feddyn_mod
from fedflower.client.keras_client import KerasClient
from fedflower.client.scaffold import scaffold_mod
from fedflower.data.source import ClientData
from fedflower.sites import site_name

ClientFn = Callable[[Context], KerasClient]
T = TypeVar("T")


def _config(msg: Message) -> dict:
    record = msg.content.config_records.get(keys.CONFIG, ConfigRecord())
    return dict(record)


def to_client_app(
    client_fn: ClientFn,
    mods: Sequence[Mod] = (),
    query: Callable[[Message, Context], Message] | None = None,
) -> ClientApp:
    """Wrap ``client_fn(context) -> KerasClient`` into a ``ClientApp`` with train/evaluate handlers.

    The model arrives keyed by variable path: the client's ``receive`` matches it to its own
    variables (one line naming the first that differs) and ``send`` keys the reply as the
    model was keyed (:mod:`fedflower.wire`), so nodes on different Keras backends exchange it.

    Train replies carry ``arrays`` (the new weights, or the update ``w_global - w_local`` when
    the config asks for ``return-update``) and ``metrics`` (training metrics plus
    ``num-examples``); evaluate replies carry ``metrics`` (``eval_loss``, ``eval_accuracy``,
    ``num-examples``). The :func:`~fedflower.client.compression.compression_mod` comes first
    (it does nothing unless the server compresses), then ``mods`` in order (e.g. a simulated
    attack, :func:`fedflower.client.attacks.attack_mod`): they see the decoded model and the
    reply before it is encoded. FedDyn's and SCAFFOLD's states
    (:func:`~fedflower.client.dynamic.feddyn_mod`, :func:`~fedflower.client.scaffold.scaffold_mod`,
    idle unless the server asks for them) are innermost. ``query`` answers the server's query
    messages (a table's statistics, :mod:`fedflower.client.statistics`).
    """
    app = ClientApp(mods=[compression_mod, *mods, feddyn_mod, scaffold_mod])
    if query is not None:
        app.query()(query)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        client = client_fn(context)
        received = msg.content.array_records[keys.ARRAYS]
        parameters = client.receive(received)
        config = _config(msg)
        extra = {  # Ditto's personal model, FedDyn's linear term
            name: client.receive(record, what=f"the {key!r} arrays")
            for name, key in (("start", keys.START), ("linear", keys.LINEAR))
            if (record := msg.content.array_records.get(key)) is not None
        }
        weights, num_examples, metrics = client.fit(parameters, config, **extra)
        if config.get(keys.RETURN_UPDATE):  # fedsgd: reply with the update w_global - w_local
            weights = [
                np.subtract(g, w, dtype=g.dtype) for g, w in zip(parameters, weights, strict=True)
            ]
        content = RecordDict(
            {
                keys.ARRAYS: client.send(weights, received),
                keys.METRICS: MetricRecord({**metrics, keys.NUM_EXAMPLES: num_examples}),
            }
        )
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        client = client_fn(context)
        parameters = client.receive(msg.content.array_records[keys.ARRAYS])
        config = _config(msg)
        epochs = config.get(keys.FINETUNE_EPOCHS)
        if epochs:  # personalization=finetune: the global model trained locally first
            parameters, _, _ = client.fit(parameters, {**config, keys.LOCAL_EPOCHS: int(epochs)})
        loss, num_examples, metrics = client.evaluate(parameters, config)
        record = MetricRecord({keys.EVAL_LOSS: loss, **metrics, keys.NUM_EXAMPLES: num_examples})
        content = RecordDict({keys.METRICS: record})
        if config.get(keys.REPORT_CLIENT):  # the server cannot tell nodes apart by their ids
            name = site_name(context.node_config, context.node_id)
            content[keys.CLIENT_INFO] = ConfigRecord({keys.CLIENT_NAME: name})
        return Message(content, reply_to=msg)

    return app


def keras_client_fn(
    build_model: Callable[[], keras.Model],
    client_data: Callable[[int], ClientData],
    seed: int,
    client_cls: type[KerasClient] = KerasClient,
) -> ClientFn:
    """A ``client_fn`` whose clients share one compiled model per process.

    Parameters
    ----------
    build_model : callable
        Returns a compiled Keras model; called once per process, on the first message (a
        :class:`SharedModel` is used as it is, so a server can share it).
    client_data : callable
        Maps a partition id (the node config's ``partition-id``) to that client's data.
    seed : int
        The run's seed.
    client_cls : type
        The client class to instantiate (a :class:`KerasClient` subclass).
    """
    model = build_model if isinstance(build_model, SharedModel) else SharedModel(build_model)

    def client_fn(context: Context) -> KerasClient:
        cid = int(context.node_config[keys.PARTITION_ID])
        return client_cls(model(), client_data(cid), cid=cid, seed=seed)

    return client_fn


class SharedModel:
    """One federation's model, built once per process: a picklable ``build_model``.

    Flower's Ray engine ships the ClientApp (and the ``client_fn`` closure) with every
    message, so a model kept in the closure would be rebuilt, and its functions traced again,
    for every message; this object carries only a token naming the federation and the
    builder, and the model stays in the process cache (:func:`cached`).
    """

    def __init__(self, build: Callable[[], keras.Model]) -> None:
        self.token = uuid.uuid4().hex
        self.build = build

    def __call__(self) -> keras.Model:  # noqa: D102
        return cached(self.token, "model", self.build)


@dataclass
class _ProcessCache:
    experiment: str | None = None
    items: dict[Hashable, Any] = field(default_factory=dict)


_PROCESS = _ProcessCache()


def cached(experiment: str, key: Hashable, build: Callable[[], T]) -> T:
    """``build()`` kept in this process under ``key``, for one experiment at a time.

    The one per-process cache of models and data: a simulation's clients (and, with the
    in-process engine, its server) share one model; a SuperNode keeps its data and one model
    per data shape of the run. A new ``experiment`` (a federation's token, a deployed run's
    overrides) lets the previous one's objects go.
    """
    if _PROCESS.experiment != experiment:
        _PROCESS.items.clear()
        _PROCESS.experiment = experiment
    if key not in _PROCESS.items:
        _PROCESS.items[key] = build()
    return _PROCESS.items[key]
