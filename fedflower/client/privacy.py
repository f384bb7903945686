"""The client side of differential privacy: Flower's clipping and local-DP mods, chosen by config.

``privacy=dp_client`` clips every update with Flower's ``fixedclipping_mod`` (the norm comes
from the server's ``DifferentialPrivacyClientSideFixedClipping`` wrapper with the train
config); ``privacy=local_dp`` clips and noises it with Flower's ``LocalDpMod`` before it leaves
the client (Gaussian mechanism, Dwork & Roth 2014, Thm. A.1; DP-FedAvg clipping,
arXiv:1710.06963). Other modes change nothing on the client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context, Message, MessageType
from flwr.clientapp.mod import LocalDpMod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable, Mod

PrivacyOptions = Callable[[Context], Mapping[str, Any]]


def privacy_mod(options: PrivacyOptions) -> Mod:
    """A mod applying the privacy mode ``options(context)`` names to train replies.

    ``options`` maps the node's context to the ``privacy`` config group: the simulation
    passes the experiment's, a deployed SuperNode reads it from the run config.
    """
    local: dict[tuple[float, float, float], LocalDpMod] = {}

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        opts = options(context)
        name = opts.get("name", "none")
        if name == "dp_client":
            return fixedclipping_mod(msg, context, call_next)
        if name == "local_dp":
            key = (
                float(opts["clipping_norm"]),
                float(opts["local_epsilon"]),
                float(opts["local_delta"]),
            )
            if key not in local:  # sensitivity = clipping norm (add/remove one client)
                local[key] = LocalDpMod(key[0], key[0], key[1], key[2])
            return local[key](msg, context, call_next)
        return call_next(msg, context)

    return mod
