"""Simulated Byzantine clients as a Flower client mod.

:func:`attack_mod` returns a mod for ``ClientApp(mods=[...])``. In simulation a share
``fraction`` of the partitions, chosen by the seed, is malicious; a deployment applies the mod
only when its run asks for it (``attack.in_deployment=true``) and then lets each SuperNode's
node config say whether it is malicious (see :mod:`fedflower.deploy.app`). On a training
message a malicious client trains
honestly, then replaces its update ``delta = w_local - w_global`` by the attack's and tags its
reply with an ``attack`` ConfigRecord (the server only records the tag, see
:mod:`fedflower.server.attack_log`). Attacks:

* ``sign_flip``: ``-magnitude * delta`` (reversed gradient, e.g. Damaskinos et al. 2018,
  arXiv:1802.07927's threat model);
* ``gaussian``: ``delta ~ N(0, magnitude^2)`` per coordinate (Blanchard et al. 2017,
  arXiv:1703.02757);
* ``scale``: ``factor * delta`` (boosted update, Bagdasaryan et al. 2020, arXiv:1807.00459);
* ``label_flip``: trains on labels ``y -> C - 1 - y`` (Fang et al. 2020, arXiv:1911.11815);
* ``lie``: "A Little Is Enough" (Baruch et al. 2019, arXiv:1902.06156): every coordinate
  ``mean - z * std`` over the colluders' honest updates, ``z`` from the paper's formula
  unless given. Colluders share their honest updates within the process (the local engine
  runs every client in one process); one that has not trained yet this round contributes its
  previous update.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedflower import keys
from fedflower.client.options import Attack
from fedflower.determinism import derive_seed

STREAM = 0xA77AC4
"""Seed stream of the choice of malicious partitions (apart from sampling and training)."""
Arrays = list[np.ndarray]


def malicious_partitions(num_partitions: int, fraction: float, seed: int) -> list[int]:
    """The ``round(fraction * num_partitions)`` malicious partition ids, chosen by ``seed``."""
    count = round(fraction * num_partitions)
    rng = np.random.default_rng(derive_seed(seed, STREAM))
    return sorted(rng.choice(num_partitions, size=count, replace=False).tolist())


def warn_outnumbered(attack: Attack, num_clients: int, tolerated: int) -> bool:
    """Warn when more clients attack than a robust rule tolerates (``num_malicious_nodes``).

    Krum, Multi-Krum and Bulyan bound the influence of at most ``f`` Byzantine clients
    (Blanchard et al. 2017, arXiv:1703.02757); with more attackers the bound no longer holds.
    """
    attackers = round(attack.fraction * num_clients) if attack.active else 0
    if attackers <= tolerated:
        return False
    logging.getLogger(__name__).warning(
        "attack=%s makes %d of %d clients malicious but strategy.num_malicious_nodes=%d: "
        "the robust rule's guarantee holds for at most %d; set strategy.num_malicious_nodes=%d",
        attack.name,
        attackers,
        num_clients,
        tolerated,
        tolerated,
        attackers,
    )
    return True


def lie_z(num_clients: int, num_malicious: int) -> float:
    """The paper's ``z_max``: ``s = floor(n/2 + 1) - m``, ``z = Phi^-1((n - s) / n)``."""
    s = math.floor(num_clients / 2 + 1) - num_malicious
    return NormalDist().inv_cdf(min(max((num_clients - s) / num_clients, 0.5), 0.999))


class Colluders:
    """The latest honest update of every malicious client in this process (for ``lie``)."""

    def __init__(self) -> None:
        self.updates: dict[int, Arrays] = {}

    def lie(self, pid: int, delta: Arrays, z: float) -> Arrays:
        """Note ``delta`` as ``pid``'s, return ``mean - z * std`` over all colluders' updates."""
        self.updates[pid] = delta
        stacks = zip(*self.updates.values(), strict=True)
        return [
            (s.mean(axis=0) - z * s.std(axis=0)).astype(d.dtype)
            for s, d in ((np.stack(layer), d) for layer, d in zip(stacks, delta, strict=True))
        ]


def poison(attack: Attack, delta: Arrays, rng: np.random.Generator) -> Arrays:
    """The update a malicious client sends instead of its honest ``delta`` (not ``lie``)."""
    if attack.name == "sign_flip":
        return [(-attack.magnitude * d).astype(d.dtype) for d in delta]
    if attack.name == "gaussian":
        return [rng.normal(0.0, attack.magnitude, d.shape).astype(d.dtype) for d in delta]
    if attack.name == "scale":
        return [(attack.factor * d).astype(d.dtype) for d in delta]
    return delta


def _replace_update(msg: Message, reply: Message, new_delta: Callable[[Arrays], Arrays]) -> None:
    """Swap the reply's arrays for those of ``new_delta(honest delta)``, in the reply's form."""
    sent = msg.content.array_records[keys.ARRAYS].to_numpy_ndarrays()
    record = reply.content.array_records[keys.ARRAYS]
    names, local = list(record.keys()), record.to_numpy_ndarrays()
    returns_update = bool(msg.content.config_records[keys.CONFIG].get(keys.RETURN_UPDATE))
    # the reply holds w_local, or the update w_global - w_local (fedsgd)
    delta = [-w if returns_update else w - g for w, g in zip(local, sent, strict=True)]
    bad = new_delta(delta)
    out = [-b if returns_update else g + b for b, g in zip(bad, sent, strict=True)]
    arrays = [np.asarray(a, dtype=w.dtype) for a, w in zip(out, local, strict=True)]
    reply.content[keys.ARRAYS] = ArrayRecord(
        {n: Array(a) for n, a in zip(names, arrays, strict=True)}
    )


Role = Callable[[Context], int | None]
"""``role(context)``: the node's id for seeding its attack if it is malicious, else ``None``."""


def seeded_role(attack: Attack) -> Role:
    """Malicious: the node's partition, if among :func:`malicious_partitions` (simulation)."""

    def role(context: Context) -> int | None:
        pid = int(context.node_config[keys.PARTITION_ID])
        n = int(context.node_config[keys.NUM_PARTITIONS])
        return pid if pid in malicious_partitions(n, attack.fraction, attack.seed) else None

    return role


def attack_mod(attack: Attack, role: Role | None = None) -> Mod:
    """A client mod that makes the malicious nodes run ``attack``.

    ``role`` says which nodes are malicious (default :func:`seeded_role`: the seed-chosen
    share of partitions).
    """
    colluders = Colluders()
    role = role or seeded_role(attack)

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type.split(".")[0] != MessageType.TRAIN:
            return call_next(msg, context)
        pid = role(context)
        if pid is None:
            return call_next(msg, context)
        if attack.name == "label_flip":
            msg.content.config_records[keys.CONFIG][keys.FLIP_LABELS] = True
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        server_round = msg.content.config_records[keys.CONFIG].get(keys.SERVER_ROUND, 0)
        rng = np.random.default_rng(derive_seed(attack.seed, int(server_round), pid))  # type: ignore[arg-type]
        if attack.name == "lie":
            n = int(context.node_config[keys.NUM_PARTITIONS])
            z = lie_z(n, round(attack.fraction * n)) if attack.z is None else attack.z
            _replace_update(msg, reply, lambda delta: colluders.lie(pid, delta, z))
        elif attack.name != "label_flip":
            _replace_update(msg, reply, lambda delta: poison(attack, delta, rng))
        reply.content[keys.ATTACK] = ConfigRecord({keys.ATTACK_NAME: attack.name})
        return reply

    return mod
