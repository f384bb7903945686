"""SCAFFOLD (arXiv:1910.06378, Algorithm 1, option II) on hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest
from fedflower.strategies.scaffold import Scaffold
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from helpers import FakeGrid, answer, client_context, make_reply, task

from fedflower import keys
from fedflower.aggregation.control import controlled_step
from fedflower.client.scaffold import scaffold_mod
from fedflower.errors import ConfigError


def test_server_step_on_hand_computed_numbers() -> None:
    # x = 1, N = 4, participants y = 2 and 4, dc = 0.4 and 1.2, eta_g = 0.5, c = 0
    # x = 1 + 0.5 * ((2 - 1) + (4 - 1)) / 2 = 2; c = 0 + (0.4 + 1.2) / 4 = 0.4
    x, c = controlled_step(
        [np.array([1.0])],
        [[np.array([2.0])], [np.array([4.0])]],
        None,
        [[np.array([0.4])], [np.array([1.2])]],
        0.5,
        4,
    )
    assert (x[0][0], c[0][0]) == (pytest.approx(2.0), pytest.approx(0.4))
    x, c = controlled_step(x, [[np.array([2.0])]], c, [[np.array([-0.8])]], 1.0, 4)
    assert (x[0][0], c[0][0]) == (pytest.approx(2.0), pytest.approx(0.2))  # no progress


def scaffold_task(x: float, c: float) -> Message:
    config = {keys.LOCAL_EPOCHS: 2, keys.BATCH_SIZE: 4, keys.LEARNING_RATE: 0.1}
    return task([np.array([x])], config=config, records={keys.CONTROL: [np.array([c])]})


@pytest.mark.usefixtures("task_identity")
def test_client_control_variate_follows_option_two() -> None:
    # 8 examples, batch 4, 2 epochs: K = 4 steps of lr 0.1, so (x - y) / (K lr) = (x - y) / 0.4
    seen: list = []

    def train(msg: Message, context: Context) -> Message:
        seen.append(msg.content.array_records[keys.LINEAR].to_numpy_ndarrays()[0][0])
        return answer(msg, [np.array([0.6])], {keys.NUM_EXAMPLES: 8})

    context = client_context()
    # round 1: c_i = 0, c = 0.5: linear coefficient c_i - c = -0.5 (gradient + c - c_i);
    # c_i+ = 0 - 0.5 + (1 - 0.6) / 0.4 = 0.5
    reply = scaffold_mod(scaffold_task(1.0, 0.5), context, train)
    delta = reply.content.array_records[keys.CONTROL_DELTA].to_numpy_ndarrays()[0][0]
    assert (seen[-1], delta) == (pytest.approx(-0.5), pytest.approx(0.5))
    # round 2: c_i = 0.5, c = 0.25: coefficient 0.25; c_i+ = 0.5 - 0.25 + 1 = 1.25
    reply = scaffold_mod(scaffold_task(1.0, 0.25), context, train)
    delta = reply.content.array_records[keys.CONTROL_DELTA].to_numpy_ndarrays()[0][0]
    assert (seen[-1], delta) == (pytest.approx(0.25), pytest.approx(0.75))
    kept = context.state.array_records[keys.SCAFFOLD_STATE].to_numpy_ndarrays()[0][0]
    assert kept == pytest.approx(1.25)


def test_global_lr_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"strategy\.global_lr"):
        Scaffold(global_lr=0.0)


@pytest.mark.usefixtures("task_identity")
def test_a_round_sends_c_and_moves_it_by_the_replies_changes() -> None:
    strategy = Scaffold(global_lr=1.0)
    arrays = ArrayRecord([np.array([1.0], dtype=np.float32)])
    tasks = list(strategy.configure_train(1, arrays, ConfigRecord(), FakeGrid([1, 2, 3, 4])))
    sent = [t.content.array_records[keys.CONTROL].to_numpy_ndarrays()[0][0] for t in tasks]
    assert sent == [0.0] * 4  # c starts at 0
    replies = []
    for msg, (y, dc) in zip(tasks, [(2.0, 0.4), (4.0, 1.2), (1.0, 0.0), (1.0, None)], strict=True):
        reply = make_reply(msg, [np.array([y], dtype=np.float32)])
        if dc is not None:
            reply.content[keys.CONTROL_DELTA] = ArrayRecord([np.array([dc])])
        replies.append(reply)
    new, _ = strategy.aggregate_train(1, replies)
    assert new is not None and strategy.rejected == 1  # the reply without its change
    # x = 1 + ((2 - 1) + (4 - 1) + 0) / 3 = 7/3 (unweighted); c = (0.4 + 1.2 + 0) / 4 = 0.4
    assert new.to_numpy_ndarrays()[0][0] == pytest.approx(7 / 3)
    assert strategy.control is not None and strategy.control[0][0] == pytest.approx(0.4)
    tasks = list(strategy.configure_train(2, new, ConfigRecord(), FakeGrid([1, 2, 3, 4])))
    assert tasks[0].content.array_records[keys.CONTROL].to_numpy_ndarrays()[0][0] == pytest.approx(
        0.4
    )
    state = strategy.state_dict()
    restored = Scaffold()
    restored.load_state_dict(state)
    assert restored.control is not None and restored.control[0][0] == pytest.approx(0.4)
