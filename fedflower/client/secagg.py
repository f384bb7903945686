"""The client side of SecAgg+: Flower's ``secaggplus_mod`` in front of the Message-API client.

Flower 1.42's ``secaggplus_mod`` (``flwr.client.mod``) speaks the legacy layout: it passes the
training instruction as ``FitIns`` records and reads the reply as ``FitRes`` records. The
:func:`legacy_layout_mod` placed inside it translates both ways, so the ClientApp (and the mods
after it, e.g. DP clipping) see the ordinary ``arrays``/``config`` message. With the
``unit-weight`` config flag (set by the DP wrappers) the client reports weight 1, so the
secure sum is the unweighted sum the noise is calibrated for. ``FitIns`` parameters carry no
names: the server sends the model's variable paths in the config (``array-names``, one
string, a line per variable).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from fedflower import keys
from fedflower.wire import named_record

SecaggOptions = Callable[[Context], Mapping[str, Any]]


def legacy_layout_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Translate a legacy ``FitIns`` message for the ClientApp and its reply to ``FitRes``."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    config: dict[str, Any] = dict(fitins.config)
    names = str(config.pop(keys.ARRAY_NAMES)).split("\n")  # Parameters carry no names
    content = RecordDict(
        {
            keys.ARRAYS: named_record(names, parameters_to_ndarrays(fitins.parameters)),
            keys.CONFIG: ConfigRecord(config),
        }
    )
    inner = Message(content, dst_node_id=msg.metadata.dst_node_id, message_type=MessageType.TRAIN)
    reply = call_next(inner, context)
    if reply.has_error():
        return Message(reply.error, reply_to=msg)
    metrics = dict(reply.content.metric_records[keys.METRICS])
    weights = reply.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
    count = (
        1 if fitins.config.get(keys.UNIT_WEIGHT) else int(cast(float, metrics[keys.NUM_EXAMPLES]))
    )
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), count, metrics)  # type: ignore[arg-type]
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def secagg_mod(options: SecaggOptions) -> Mod:
    """A mod running Flower's ``secaggplus_mod`` when ``options(context)`` names ``secaggplus``.

    ``options`` maps the node's context to the ``secagg`` config group (the simulation
    passes the experiment's, a deployed SuperNode reads it from the run config).
    """

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN or options(context).get("name") in (
            None,
            "none",
        ):
            return call_next(msg, context)
        return secaggplus_mod(msg, context, lambda m, c: legacy_layout_mod(m, c, call_next))

    return mod
