"""FedDyn (arXiv:2111.04263, Algorithm 1) on hand-computed numbers: server and client side."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from fedflower.strategies.feddyn import FedDyn
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from helpers import answer, client_context

from fedflower import keys
from fedflower.aggregation.dynamic import dynamic_step
from fedflower.client.dynamic import feddyn_mod, linear_term
from fedflower.errors import ConfigError


def test_server_step_on_hand_computed_numbers() -> None:
    # theta = 1, m = 4 clients, participants theta_1 = 2, theta_2 = 4, alpha = 0.5
    # h = 0 - 0.5 * ((2 - 1) + (4 - 1)) / 4 = -0.5; theta = (2 + 4) / 2 - (-0.5 / 0.5) = 4
    theta, h = dynamic_step([np.array([1.0])], [[np.array([2.0])], [np.array([4.0])]], None, 0.5, 4)
    assert (theta[0][0], h[0][0]) == (pytest.approx(4.0), pytest.approx(-0.5))
    # next round from theta = 4: one participant at 4 (no progress): h stays, theta = 4 + 1 = 5
    theta, h = dynamic_step(theta, [[np.array([4.0])]], h, 0.5, 4)
    assert (theta[0][0], h[0][0]) == (pytest.approx(5.0), pytest.approx(-0.5))


@pytest.mark.usefixtures("task_identity")
def test_client_state_follows_the_papers_update() -> None:
    # g_i <- g_i - alpha (theta_i - theta): from 0, trained 3 from 1 with alpha 0.5 -> -1
    seen: list = []

    def train(msg: Message, context: Context) -> Message:
        linear = msg.content.array_records[keys.LINEAR]
        assert list(linear.keys()) == ["dense/kernel"]  # keyed as the model's arrays
        seen.append(linear.to_numpy_ndarrays()[0][0])
        return answer(msg, [np.array([3.0])])

    context = client_context()
    for _ in range(2):
        content = RecordDict(
            {
                keys.ARRAYS: ArrayRecord({"dense/kernel": Array(np.array([1.0]))}),
                keys.CONFIG: ConfigRecord({keys.FEDDYN_ALPHA: 0.5}),
            }
        )
        feddyn_mod(Message(content, dst_node_id=1, message_type=MessageType.TRAIN), context, train)
    assert seen == [0.0, -1.0]
    assert context.state.array_records[keys.FEDDYN_STATE].to_numpy_ndarrays()[0][0] == -2.0


def test_linear_term_adds_minus_g_dot_w_to_the_loss() -> None:
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.set_weights([np.array([[2.0]], dtype=np.float32)])
    with linear_term(model, [np.array([[3.0]], dtype=np.float32)]):
        assert float(sum(model.losses)) == pytest.approx(-6.0)  # -<3, 2>
    assert float(sum(model.losses)) == 0.0  # zero outside the block


def test_alpha_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"strategy\.alpha"):
        FedDyn(alpha=0.0)
