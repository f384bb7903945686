"""Stragglers (engine.stragglers): the seeded plan and the Grid wrapper that applies it."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from fedflower.strategies.fedavg import FedAvg
from fedflower.strategies.fedprox import FedProx
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from fedflower import keys
from fedflower.engine.stragglers import StragglerGrid, plan_round, straggler_grid
from fedflower.errors import ConfigError

NODES = list(range(101, 111))


@pytest.mark.parametrize(("fraction", "count"), [(0.0, 0), (0.5, 5), (0.9, 9), (1.0, 10)])
def test_plan_has_the_papers_number_of_stragglers(fraction: float, count: int) -> None:
    plan = plan_round(0, 1, NODES, fraction, local_epochs=20)
    assert len(plan.epochs) == count
    assert set(plan.nodes) <= set(NODES)
    assert all(1 <= e <= 20 for e in plan.epochs.values())


def test_plan_depends_on_seed_and_round_only() -> None:
    a = plan_round(3, 7, NODES, 0.5, 20)
    assert plan_round(3, 7, list(reversed(NODES)), 0.5, 20) == a
    assert plan_round(4, 7, NODES, 0.5, 20) != a
    assert plan_round(3, 8, NODES, 0.5, 20) != a


def test_straggler_epochs_are_uniform_on_one_to_e() -> None:
    epochs = np.array(
        [e for r in range(400) for e in plan_round(0, r, NODES, 0.9, 4).epochs.values()]
    )
    counts = np.bincount(epochs, minlength=5)[1:]
    assert counts.min() > 0.2 * len(epochs)  # each of 1, 2, 3, 4 about a quarter
    assert epochs.max() == 4 and epochs.min() == 1


pytestmark = pytest.mark.usefixtures("task_identity")


class RecordingGrid:
    """The inner grid: remembers what was sent and answers nothing."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def get_node_ids(self) -> list[int]:
        return NODES

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        self.sent.extend(messages)
        return []

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        messages = list(messages)
        self.sent.extend(messages)
        return [str(i) for i in range(len(messages))]


def round_messages(server_round: int, message_type: str = MessageType.TRAIN) -> list[Message]:
    """One shared RecordDict for all nodes, as Flower's FedAvg builds them."""
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord([np.zeros(3, np.float32)]),
            keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: server_round, keys.LOCAL_EPOCHS: 20}),
        }
    )
    return [Message(content, dst_node_id=n, message_type=message_type) for n in NODES]


def sent_epochs(grid: RecordingGrid) -> dict[int, int]:
    return {
        m.metadata.dst_node_id: m.content.config_records[keys.CONFIG][keys.LOCAL_EPOCHS]
        for m in grid.sent
    }


def test_kept_stragglers_get_their_planned_epochs_and_others_the_full_count() -> None:
    inner = RecordingGrid()
    grid = StragglerGrid(inner, 0.5, drop=False, seed=1)
    messages = round_messages(3)
    grid.send_and_receive(messages)
    plan = plan_round(1, 3, NODES, 0.5, 20)
    want = {n: plan.epochs.get(n, 20) for n in NODES}
    assert sent_epochs(inner) == want
    for m in inner.sent:
        flagged = m.content.config_records[keys.CONFIG].get(keys.STRAGGLER, False)
        assert flagged == (m.metadata.dst_node_id in plan.epochs)
    # the shared instruction of the non-stragglers was not modified
    assert messages[0].content.config_records[keys.CONFIG][keys.LOCAL_EPOCHS] == 20
    assert grid.plans == [plan]


def test_dropped_stragglers_are_not_sent() -> None:
    inner = RecordingGrid()
    grid = StragglerGrid(inner, 0.9, drop=True, seed=1)
    grid.push_messages(round_messages(2))
    plan = plan_round(1, 2, NODES, 0.9, 20)
    assert sorted(sent_epochs(inner)) == sorted(set(NODES) - set(plan.nodes))
    assert set(sent_epochs(inner).values()) == {20}


def test_evaluation_messages_pass_unchanged() -> None:
    inner = RecordingGrid()
    grid = StragglerGrid(inner, 0.9, drop=True, seed=1)
    messages = round_messages(2, MessageType.EVALUATE)
    grid.send_and_receive(messages)
    assert inner.sent == messages


def test_straggler_grid_chooses_drop_from_config_or_strategy() -> None:
    inner = RecordingGrid()
    assert straggler_grid(inner, {"straggler_fraction": 0.0}, FedAvg(), 0) is inner
    options = {"straggler_fraction": 0.5, "drop_stragglers": None}
    assert straggler_grid(inner, options, FedAvg(), 0).drop is True
    assert straggler_grid(inner, options, FedProx(proximal_mu=1.0), 0).drop is False
    forced = {"straggler_fraction": 0.5, "drop_stragglers": True}
    assert straggler_grid(inner, forced, FedProx(proximal_mu=1.0), 0).drop is True


@pytest.mark.parametrize("fraction", [-0.1, 1.5, "half"])
def test_bad_fraction_is_a_config_error(fraction) -> None:
    with pytest.raises(ConfigError, match="straggler_fraction"):
        StragglerGrid(RecordingGrid(), fraction, drop=True, seed=0)


@pytest.mark.parametrize(
    ("options", "warns"),
    [
        ({"local_epochs": 1, "drop_stragglers": False}, True),  # epochs drawn from [1, 1]
        ({"local_epochs": 1, "drop_stragglers": True}, False),  # dropped: they do something
        ({"local_epochs": 3, "drop_stragglers": False}, False),
    ],
)
def test_stragglers_that_change_nothing_warn(
    options: dict, warns: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="fedflower.engine.stragglers"):
        straggler_grid(RecordingGrid(), {"straggler_fraction": 0.5, **options}, FedAvg(), 0)
    assert ("does nothing" in caplog.text) is warns
