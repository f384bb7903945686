"""In-process simulation: virtual SuperNodes run the ClientApp in the server's own process.

The ``LocalGrid`` implements Flower's ``Grid`` so the unchanged ``ServerApp`` and ``ClientApp``
run on it. Every message is serialized to Flower's wire objects and inflated again on the other
side, so clients and server share no Python objects, exactly as over a network. Clients run one
after another in dispatch order, which makes a run deterministic for a given seed, and the Keras
model is built once for the whole process. This skips Ray's start-up and per-message
process hops, which dominate small federations (see ``bench/overhead.py``).

A node's ``Context`` is created when a message reaches it and kept only while its ``state``
holds something (e.g. a client's error-feedback residual), so a federation of 100,000 nodes of
which 100 are sampled per round costs memory for the sampled ones only (see ``bench/scale.py``).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    no_object_id_recompute,
)
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedflower import keys
from fedflower.engine.wrapper import MessageFactory
from fedflower.sites import site_name

log = logging.getLogger(__name__)

RUN_ID = 1
FIRST_NODE_ID = 1


def deflate(message: Message, wire: dict[str, bytes]) -> list[str]:
    """Serialize ``message`` into ``wire`` (object id -> bytes); return its object ids.

    ``wire`` caches serialized objects by object id across the messages of one push: Flower's
    objects are content-addressed, so the global model broadcast to every node is serialized
    once (as a SuperLink stores it once).
    """
    with no_object_id_recompute():  # each object's id (a hash of its bytes) computed once
        objects = get_all_nested_objects(message)
        for oid, obj in objects.items():
            if oid not in wire:
                wire[oid] = obj.deflate()
    return list(objects)


def inflate(object_id: str, contents: dict[str, bytes], message_id: str) -> Message:
    """Build the received message ``object_id`` from its wire objects; name it ``message_id``."""
    with no_object_id_recompute():
        received = inflate_object_from_contents(object_id, contents)
    assert isinstance(received, Message)
    received.metadata.__dict__["_message_id"] = message_id
    return received


def transmit(
    message: Message,
    message_id: str,
    wire: dict[str, bytes] | None = None,
    sizes: dict[str, int] | None = None,
) -> Message:
    """Serialize ``message`` to its wire objects and build the received copy from them.

    Every node inflates its own copy, even of objects cached in ``wire`` (see :func:`deflate`).
    The number of bytes serialized goes to ``sizes[message_id]`` (what metering counts).
    """
    wire = {} if wire is None else wire
    objects = deflate(message, wire)
    if sizes is not None:
        sizes[message_id] = sum(len(wire[oid]) for oid in objects)
    return inflate(message.object_id, {oid: wire[oid] for oid in objects}, message_id)


def run_client_app(client_app: ClientApp, received: Message, context: Context) -> Message:
    """Run ``client_app`` on a received message; a failing client replies with an error."""
    try:
        return client_app(received, context)
    except Exception as exc:  # a failing client must not stop the server
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("client on node %s failed: %s", context.node_id, reason)
        error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason)
        return Message(error, reply_to=received)


class LocalGrid(MessageFactory, Grid):
    """A Grid whose nodes are virtual SuperNodes executed in this process.

    Parameters
    ----------
    client_app : flwr.clientapp.ClientApp
        The app every node runs.
    num_nodes : int
        Number of virtual SuperNodes; node ``i`` gets ``partition-id = i``.
    node_configs : sequence of dict, optional
        One node config per node instead of the partition id and count (e.g. a deployed
        SuperNode's ``data-path``).
    run_config : dict, optional
        The run config every node's context carries.
    """

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        node_configs: Sequence[dict[str, Any]] | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        if node_configs is not None and len(node_configs) != num_nodes:
            raise ValueError(f"{len(node_configs)} node configs for {num_nodes} nodes")
        self.client_app = client_app
        self.num_nodes = num_nodes
        self.node_configs = node_configs
        self.run_config = run_config or {}
        self._run = Run.create_empty(RUN_ID)
        self._contexts: dict[int, Context] = {}  # only nodes whose state is not empty
        self._replies: dict[str, Message] = {}
        self._sizes: dict[str, int] = {}  # serialized bytes by message id, until metered
        self._next_id = 0

    def set_run(self, run: Run) -> None:  # noqa: D102
        self._run = run

    @property
    def run(self) -> Run:  # noqa: D102
        return self._run

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return range(FIRST_NODE_ID, FIRST_NODE_ID + self.num_nodes)

    def context(self, node_id: int) -> Context:
        """Node ``node_id``'s context: its kept state, or a fresh one (partition ``id - 1``)."""
        kept = self._contexts.get(node_id)
        if kept is not None:
            return kept
        index = node_id - FIRST_NODE_ID
        node_config: dict[str, Any] = (
            {keys.PARTITION_ID: index, keys.NUM_PARTITIONS: self.num_nodes}
            if self.node_configs is None
            else dict(self.node_configs[index])
        )
        return Context(
            run_id=RUN_ID,
            node_id=node_id,
            node_config=node_config,
            state=RecordDict(),
            run_config=dict(self.run_config),
        )

    def keep(self, context: Context) -> None:
        """Keep a node's context across rounds while its state holds something."""
        if len(context.state):  # the client keeps something across rounds
            self._contexts[context.node_id] = context
        else:
            self._contexts.pop(context.node_id, None)

    def state_dict(self) -> dict[str, Any]:
        """The state every node keeps (``Context.state``: personal models, residuals, ...)."""
        return {str(node): _records(ctx.state) for node, ctx in self._contexts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Give each node back the state a checkpoint holds."""
        self._contexts = {}
        for node, records in state.items():
            context = self.context(int(node))
            context.state = _record_dict(records)
            self._contexts[int(node)] = context

    def node_name(self, node_id: int) -> str:
        """Node ``node_id``'s name in per-client results (see :mod:`fedflower.sites`)."""
        return site_name(self.context(node_id).node_config, node_id)

    def _execute(self, received: Message) -> Message:
        context = self.context(received.metadata.dst_node_id)
        try:
            return run_client_app(self.client_app, received, context)
        finally:
            self.keep(context)

    def new_message_id(self, message: Message) -> str:
        """Check the message's node, give the message its id and return it."""
        if not 0 <= message.metadata.dst_node_id - FIRST_NODE_ID < self.num_nodes:
            raise ValueError(f"no node with id {message.metadata.dst_node_id}")
        self._next_id += 1
        # fixed width, as Flower's (content-hash) ids: a message's size, and so its
        # duration on the virtual clock, must not depend on how many came before it
        message_id = f"m{self._next_id:09d}"
        message.metadata.__dict__["_message_id"] = message_id
        return message_id

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message to its node, run the ClientApp and keep the reply."""
        ids = []
        wire: dict[str, bytes] = {}
        for message in messages:
            message_id = self.new_message_id(message)
            reply = self._execute(transmit(message, message_id, wire, self._sizes))
            self._replies[message_id] = transmit(reply, "r" + message_id[1:], None, self._sizes)
            ids.append(message_id)
        return ids

    def wire_nbytes(self, message_id: str) -> int | None:
        """The bytes a message pushed or a reply pulled took on the wire (asked once)."""
        return self._sizes.pop(message_id, None)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Return (and forget) the replies to ``message_ids`` that exist."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(  # noqa: D102
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def _records(state: RecordDict) -> dict[str, Any]:
    """A node's ``Context.state`` as plain data (arrays as NumPy, records as dicts)."""
    return {
        "arrays": {k: {n: a.numpy() for n, a in r.items()} for k, r in state.array_records.items()},
        "configs": {k: dict(r) for k, r in state.config_records.items()},
        "metrics": {k: dict(r) for k, r in state.metric_records.items()},
    }


def _record_dict(records: dict[str, Any]) -> RecordDict:
    """The ``RecordDict`` :func:`_records` described."""
    state = RecordDict()
    for k, arrays in records["arrays"].items():
        state[k] = ArrayRecord({n: Array(np.asarray(a)) for n, a in arrays.items()})
    for k, config in records["configs"].items():
        state[k] = ConfigRecord(config)
    for k, metrics in records["metrics"].items():
        state[k] = MetricRecord(metrics)
    return state


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist now (imported modules, TensorFlow's and Keras' own) out of
    the garbage collector's full collections while the block runs.

    A process that has imported TensorFlow holds millions of objects; a full collection
    (``gc`` generation 2, which CPython starts when enough objects have survived) walks them
    all: 0.23 s in a run of the digits CNN on a 2-core machine, where its 20 rounds' clients
    train in about 5 s. ``gc.freeze`` moves them to a permanent generation that collections
    skip; objects made later are collected as usual, and the frozen ones return to the
    collector when the block ends (unless they were frozen before it began). Collection does
    not touch a computation's values.
    """
    if gc.get_freeze_count():  # frozen by the caller: theirs to unfreeze
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def serve(server_app: ServerApp, grid: Grid) -> None:
    """Run ``server_app`` on ``grid`` as a SuperLink runs it: its task identity, a fresh context.

    The run's objects made before it starts stay out of full garbage collections
    (:func:`frozen_heap`).
    """
    TaskIdentity.run_id = RUN_ID
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    TaskIdentity.task_id = 1
    context = Context(
        run_id=RUN_ID, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(), run_config={}
    )
    with frozen_heap():
        server_app(grid, context)


def run_local(server_app: ServerApp, client_app: ClientApp, num_nodes: int) -> None:
    """Run ``server_app`` against ``num_nodes`` in-process virtual SuperNodes."""
    serve(server_app, LocalGrid(client_app, num_nodes))
