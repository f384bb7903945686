"""Simulated attacks: each changes what it should, on the chosen clients only."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from fedflower import keys
from fedflower.client.attacks import (
    Attack,
    attack_mod,
    lie_z,
    malicious_partitions,
    warn_outnumbered,
)

pytestmark = pytest.mark.usefixtures("task_identity")
GLOBAL = [np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), np.ones(3, np.float32)]
N = 10


def local_model(pid: int) -> list[np.ndarray]:
    """What honest client ``pid`` trains to: the global model plus its own step."""
    rng = np.random.default_rng(pid)
    return [g + rng.standard_normal(g.shape).astype(np.float32) for g in GLOBAL]


def instruction(message_type: str = MessageType.TRAIN, **config: Any) -> Message:
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord(GLOBAL),
            keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: 3, **config}),
        }
    )
    return Message(content, dst_node_id=5, message_type=message_type)


def run(attack: Attack, pid: int, msg: Message | None = None) -> tuple[Message, dict]:
    """Pass one message through the mod to an honest client; return reply and what it saw."""
    seen: dict = {}
    msg = msg or instruction()

    def client(m: Message, context: Context) -> Message:
        seen.update(m.content.config_records[keys.CONFIG])
        arrays = local_model(pid)
        if m.content.config_records[keys.CONFIG].get(keys.RETURN_UPDATE):
            arrays = [g - w for g, w in zip(GLOBAL, arrays, strict=True)]
        return Message(RecordDict({keys.ARRAYS: ArrayRecord(arrays)}), reply_to=m)

    context = Context(
        run_id=1,
        node_id=pid + 1,
        node_config={keys.PARTITION_ID: pid, keys.NUM_PARTITIONS: N},
        state=RecordDict(),
        run_config={},
    )
    return attack_mod(attack)(msg, context, client), seen


def sent(reply: Message) -> list[np.ndarray]:
    return reply.content.array_records[keys.ARRAYS].to_numpy_ndarrays()


def honest_delta(pid: int) -> list[np.ndarray]:
    return [w - g for w, g in zip(local_model(pid), GLOBAL, strict=True)]


BAD = malicious_partitions(N, 0.3, seed=7)
GOOD = next(p for p in range(N) if p not in BAD)


def test_the_seed_chooses_the_malicious_share() -> None:
    assert len(BAD) == 3 and malicious_partitions(N, 0.3, seed=7) == BAD
    assert malicious_partitions(N, 0.3, seed=8) != BAD or malicious_partitions(N, 0.3, 9) != BAD
    assert malicious_partitions(N, 0.0, seed=7) == []


@pytest.mark.parametrize("name", ["sign_flip", "gaussian", "scale", "label_flip", "lie"])
def test_honest_clients_and_evaluation_are_untouched(name: str) -> None:
    attack = Attack(name, fraction=0.3, seed=7)
    reply, seen = run(attack, GOOD)
    assert keys.ATTACK not in reply.content.config_records and keys.FLIP_LABELS not in seen
    for a, b in zip(sent(reply), local_model(GOOD), strict=True):
        np.testing.assert_array_equal(a, b)
    reply, _ = run(attack, BAD[0], instruction(MessageType.EVALUATE))
    assert keys.ATTACK not in reply.content.config_records


@pytest.mark.parametrize("return_update", [False, True])
def test_sign_flip_sends_the_reversed_scaled_update(return_update: bool) -> None:
    pid = BAD[0]
    msg = instruction(**({keys.RETURN_UPDATE: True} if return_update else {}))
    reply, _ = run(Attack("sign_flip", fraction=0.3, magnitude=2.0, seed=7), pid, msg)
    got = sent(reply)
    for out, g, d in zip(got, GLOBAL, honest_delta(pid), strict=True):
        want = 2.0 * d if return_update else g - 2.0 * d  # an update is g - w = -delta
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
        assert out.dtype == np.float32
    assert reply.content.config_records[keys.ATTACK][keys.ATTACK_NAME] == "sign_flip"


def test_scale_multiplies_the_update() -> None:
    reply, _ = run(Attack("scale", fraction=0.3, factor=10.0, seed=7), BAD[1])
    for out, g, d in zip(sent(reply), GLOBAL, honest_delta(BAD[1]), strict=True):
        np.testing.assert_allclose(out, g + 10.0 * d, rtol=1e-5, atol=1e-5)


def test_gaussian_replaces_the_update_by_noise_of_the_given_scale() -> None:
    attack = Attack("gaussian", fraction=0.3, magnitude=10.0, seed=7)
    reply, _ = run(attack, BAD[0])
    noise = np.concatenate([(o - g).ravel() for o, g in zip(sent(reply), GLOBAL, strict=True)])
    assert 5.0 < noise.std() < 15.0  # 15 draws of N(0, 10^2)
    again, _ = run(attack, BAD[0])
    for a, b in zip(sent(reply), sent(again), strict=True):
        np.testing.assert_array_equal(a, b)  # same seed, round and client: same noise


def test_label_flip_asks_the_client_to_train_on_flipped_labels() -> None:
    reply, seen = run(Attack("label_flip", fraction=0.3, seed=7), BAD[0])
    assert seen[keys.FLIP_LABELS] is True
    for a, b in zip(sent(reply), local_model(BAD[0]), strict=True):
        np.testing.assert_array_equal(a, b)  # the update is what training on them gave
    assert reply.content.config_records[keys.ATTACK][keys.ATTACK_NAME] == "label_flip"


def test_lie_sends_mean_minus_z_std_of_the_colluders_updates() -> None:
    attack = Attack("lie", fraction=0.3, z=1.5, seed=7)
    mod = attack_mod(attack)
    replies = []
    for pid in BAD:
        context = Context(
            1, pid + 1, {keys.PARTITION_ID: pid, keys.NUM_PARTITIONS: N}, RecordDict(), {}
        )

        def client(m: Message, c: Context, pid: int = pid) -> Message:
            return Message(RecordDict({keys.ARRAYS: ArrayRecord(local_model(pid))}), reply_to=m)

        replies.append(mod(instruction(), context, client))
    deltas = [honest_delta(p) for p in BAD]
    for i, layer in enumerate(zip(*deltas, strict=True)):
        stack = np.stack(layer)
        want = GLOBAL[i] + stack.mean(0) - 1.5 * stack.std(0)
        np.testing.assert_allclose(sent(replies[-1])[i], want, rtol=1e-5, atol=1e-5)


def test_lie_z_follows_the_papers_formula() -> None:
    # n=20, m=4: s = floor(11) - 4 = 7, z = Phi^-1(13/20) = 0.3853
    assert lie_z(20, 4) == pytest.approx(0.38532, abs=1e-4)


def test_more_attackers_than_krum_tolerates_warn(
    make_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    from fedflower.apps import simulated_attack

    cfg = make_cfg(
        [
            "strategy=krum",
            "strategy.num_malicious_nodes=1",
            "attack=sign_flip",
            "attack.fraction=0.4",
            "num_clients=5",
        ]
    )
    with caplog.at_level(logging.WARNING, logger="fedflower.client.attacks"):
        simulated_attack(cfg)
    assert any(
        "makes 2 of 5 clients malicious but strategy.num_malicious_nodes=1" in r.getMessage()
        for r in caplog.records
    )
    assert not warn_outnumbered(Attack(name="sign_flip", fraction=0.2), 5, 1)  # 1 attacker
