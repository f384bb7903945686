"""SCAFFOLD's client side: the corrected local gradient and the control variate in Context.state.

Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning",
ICML 2020, arXiv:1910.06378, Algorithm 1. Client ``i`` takes its local steps with the
gradient ``g_i(y) - c_i + c`` (``c``: the server's control variate, sent with the task;
``c_i``: the client's, starting at 0), which is the gradient of the loss plus the linear
term ``-<c_i - c, y>`` (:mod:`fedflower.client.dynamic`'s term). Afterwards (option II)

    c_i+ = c_i - c + (x - y_i) / (K * eta_l)

with ``K`` the local steps (epochs times batches) and ``eta_l`` the learning rate; the reply
carries ``c_i+ - c_i`` beside the model. Option II assumes plain SGD steps; with an adaptive
optimizer (Adam, fedflower's default) ``(x - y_i) / (K eta_l)`` is the mean step direction
rather than the mean gradient, a correction of the same sign and scale of the steps.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Context, Message, MessageType

from fedflower import keys
from fedflower.client.personalization import CallNext
from fedflower.wire import named_record


def local_steps(config: dict, num_examples: int) -> int:
    """``K``: local epochs times batches per epoch."""
    epochs = int(config.get(keys.LOCAL_EPOCHS, 1))
    return epochs * max(1, math.ceil(num_examples / int(config.get(keys.BATCH_SIZE, 32))))


def scaffold_mod(msg: Message, context: Context, call_next: CallNext) -> Message:
    """Correct a SCAFFOLD train task's gradient by ``c - c_i``; reply with ``c_i+ - c_i``.

    Does nothing unless the task carries the server's control variate.
    """
    record = msg.content.array_records.get(keys.CONTROL)
    if record is None or not msg.metadata.message_type.startswith(MessageType.TRAIN):
        return call_next(msg, context)
    c = record.to_numpy_ndarrays()  # in the order of the model's arrays
    model = msg.content.array_records[keys.ARRAYS]
    names, x = list(model.keys()), model.to_numpy_ndarrays()
    kept = context.state.array_records.get(keys.SCAFFOLD_STATE)
    ci = [np.zeros_like(a) for a in c] if kept is None else kept.to_numpy_ndarrays()
    msg.content[keys.LINEAR] = named_record(names, [a - b for a, b in zip(ci, c, strict=True)])
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    config = dict(msg.content.config_records[keys.CONFIG])
    y = reply.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
    if config.get(keys.RETURN_UPDATE):  # the reply is x - y
        y = [a - u for a, u in zip(x, y, strict=True)]
    n = int(reply.content.metric_records[keys.METRICS][keys.NUM_EXAMPLES])  # type: ignore[arg-type]
    scale = 1.0 / (local_steps(config, n) * float(config.get(keys.LEARNING_RATE, 0.001)))  # type: ignore[arg-type]
    new = [
        (a - b + scale * (xa.astype(np.float64) - ya)).astype(a.dtype)
        for a, b, xa, ya in zip(ci, c, x, y, strict=True)
    ]
    context.state[keys.SCAFFOLD_STATE] = named_record(names, new)
    delta = [a - b for a, b in zip(new, ci, strict=True)]
    reply.content[keys.CONTROL_DELTA] = named_record(names, delta)
    return reply
