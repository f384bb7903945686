"""Round deadlines and quorums on a fake grid that drops, delays and fails nodes."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import helpers
import numpy as np
import pytest
from fedflower.strategies.fedavg import FedAvg
from flwr.app import MessageType
from flwr.serverapp import ServerApp

from fedflower import keys
from fedflower.client.app import to_client_app
from fedflower.client.secagg import secagg_mod
from fedflower.engine.local import run_local
from fedflower.engine.wrapper import GridWrapper
from fedflower.errors import ConfigError, FederationError
from fedflower.outputs.fields import round_suffix
from fedflower.server.deadline import DeadlineGrid, DeadlineOptions
from fedflower.server.privacy import make_private
from fedflower.wire import named_record


def fake_grid(n, **faults):
    """The shared fake grid with nodes 1..n, answering with :func:`reply`."""
    return helpers.FakeGrid(range(1, n + 1), answer=reply, **faults)


def message(error=False, **metadata):
    """The parts of a Flower ``Message`` the deadline grid reads."""
    metadata.setdefault("message_id", "")
    metadata.setdefault("group_id", "")
    return SimpleNamespace(metadata=SimpleNamespace(**metadata), has_error=lambda: error)


def reply(to, error=False, src=None):
    """The reply to ``to``; ``src`` another sender (the SuperLink answers for a lost node)."""
    src = to.metadata.dst_node_id if src is None else src
    return message(error, src_node_id=src, reply_to_message_id=to.metadata.message_id)


def strategy(min_train=2, min_available=3):
    return SimpleNamespace(
        min_train_nodes=min_train, min_evaluate_nodes=1, min_available_nodes=min_available
    )


def send(grid, nodes, kind=MessageType.TRAIN):
    msgs = [message(dst_node_id=n, message_type=kind) for n in nodes]
    return list(grid.send_and_receive(msgs))


def test_round_proceeds_with_quorum_and_records_missing_and_failed():
    fake = fake_grid(4, silent={2}, slow={3}, broken={4})
    grid = DeadlineGrid(fake, strategy(min_train=1), DeadlineOptions(round_timeout=5.0))
    replies = send(grid, [1, 2, 3, 4])
    assert fake.timeouts == [5.0]
    assert len(replies) == 2  # node 1 and node 4's error (the strategy drops errors)
    row = grid.round_report()
    assert row == {"train_missing": [2, 3], "train_late": [], "train_failed": [4]}
    assert "missing nodes [2, 3]" in round_suffix(row)
    assert grid.round_report() == {}


def test_round_without_quorum_is_skipped_and_run_ends_after_max_failed():
    fake = fake_grid(3, silent={2, 3})
    grid = DeadlineGrid(
        fake, strategy(min_train=2), DeadlineOptions(round_timeout=1.0, max_failed_rounds=2)
    )
    assert send(grid, [1, 2, 3]) == []
    assert grid.round_report()["skipped"] is True
    assert send(grid, [1], MessageType.EVALUATE) != []  # evaluation quorum is 1
    fake.silent = set()
    assert len(send(grid, [1, 2, 3])) == 3  # a good round resets the count
    fake.silent = {1, 2, 3}
    send(grid, [1, 2, 3])
    with pytest.raises(FederationError, match="2 rounds in a row"):
        send(grid, [1, 2, 3])
    assert grid.run_report()["deadline"]["skipped_rounds"] == 3


def test_min_available_is_waited_for_once_then_times_out():
    now = [0.0]
    fake = fake_grid(2)
    s = strategy(min_available=3)
    grid = DeadlineGrid(
        fake, s, DeadlineOptions(round_timeout=1.0, wait_timeout=10.0),
        clock=lambda: now[0], sleep=lambda d: now.__setitem__(0, now[0] + d),
    )  # fmt: skip
    with pytest.raises(FederationError, match=r"only 2 of strategy\.min_available_nodes=3"):
        grid.get_node_ids()
    fake.node_ids.append(3)
    assert len(list(grid.get_node_ids())) == 3
    assert s.min_available_nodes == 0  # later rounds do not wait for it


def test_bad_timeout_is_a_config_error():
    with pytest.raises(ConfigError, match=r"strategy\.round_timeout must be"):
        DeadlineOptions(round_timeout=0)
    with pytest.raises(ConfigError, match="max_failed_rounds must be"):
        DeadlineOptions.split({"name": "fedavg", "round_timeout": 5, "max_failed_rounds": 0})
    assert DeadlineOptions.split({"name": "fedavg", "round_timeout": 5})[1] == {"name": "fedavg"}


class PollingGrid(helpers.FakeGrid):
    """The shared fake grid with replies to pull (``queued``), ids unique over the run."""

    def __init__(self, nodes):
        super().__init__(nodes)
        self.queued, self.pulls, self.pushes = [], 0, 0

    def push_messages(self, messages):
        ids = super().push_messages(messages)
        self.pushes += 1
        self.round_ids = [f"r{self.pushes}-{i}" for i in ids]
        for m, i in zip(messages, self.round_ids, strict=True):
            m.metadata.message_id = i
        return self.round_ids

    def pull_messages(self, message_ids):
        self.pulls += 1
        out, self.queued = list(self.queued), []
        return out


def test_a_node_lost_by_the_superlink_is_counted_once_as_failed():
    fake = fake_grid(3)
    grid = DeadlineGrid(fake, strategy(min_train=2), DeadlineOptions(round_timeout=5.0))
    fake.broken = {2}
    inner = fake.send_and_receive

    def superlink_answers_for_2(msgs, timeout=None):
        out = inner(msgs, timeout=timeout)  # the SuperLink (node 0) sends node 2's error
        return [reply(msgs[1], error=True, src=0) if r.has_error() else r for r in out]

    fake.send_and_receive = superlink_answers_for_2
    assert len(send(grid, [1, 2, 3])) == 3
    assert grid.round_report() == {"train_missing": [], "train_late": [], "train_failed": [2]}


def test_late_reply_of_an_earlier_round_is_discarded_and_counted():
    fake = PollingGrid([1, 2, 3])
    now = [0.0]
    grid = DeadlineGrid(
        fake, strategy(min_train=2), DeadlineOptions(round_timeout=1.0),
        clock=lambda: now[0], sleep=lambda d: now.__setitem__(0, now[0] + d), poll_interval=0.25,
    )  # fmt: skip
    first = [message(dst_node_id=n, message_type=MessageType.TRAIN) for n in (1, 2, 3)]
    old = list(first)

    def answer(nodes, batch):
        fake.queued = [reply(m) for m in batch if m.metadata.dst_node_id in nodes]

    fake.pull_messages = _pulling(fake, lambda: answer({1, 2}, first))
    assert len(list(grid.send_and_receive(first))) == 2  # node 3 misses the 1 s deadline
    assert fake.pulls == 5  # pulls at 0, .25, .5, .75, 1.0 s: the deadline ends the wait
    assert grid.round_report()["train_missing"] == [3]
    second = [message(dst_node_id=n, message_type=MessageType.TRAIN) for n in (1, 2, 3)]
    fake.pull_messages = _pulling(fake, lambda: answer({1, 2}, second) or fake.queued.append(
        reply(old[2])  # node 3's round-1 reply arrives now; it has no round-2 reply
    ))  # fmt: skip
    replies = list(grid.send_and_receive(second))
    assert {r.metadata.reply_to_message_id for r in replies} == {
        m.metadata.message_id for m in second[:2]
    }  # the stale update is not among the replies the strategy aggregates
    assert grid.round_report() == {"train_missing": [], "train_late": [3], "train_failed": []}
    assert grid.run_report()["deadline"]["late_replies"] == 1


def _pulling(fake, fill):
    """A ``pull_messages`` that fills the queue once (first pull), then returns nothing."""
    state = {"filled": False}

    def pull(message_ids):
        if not state["filled"]:
            fill()
            state["filled"] = True
        return PollingGrid.pull_messages(fake, message_ids)

    return pull


# -- SecAgg+: four exchanges, one round ---------------------------------------------------------
NAMES = ["dense/kernel", "dense/bias"]
START = [np.full((4, 2), 0.5, np.float32), np.zeros(2, np.float32)]


class StepClient:
    """Adds ``0.1 (cid + 1)`` to every weight and reports ``10 (cid + 1)`` examples."""

    def __init__(self, cid):
        self.cid = cid

    def receive(self, record, what=""):
        return record.to_numpy_ndarrays()

    def send(self, arrays, received):
        return named_record(list(received.keys()), arrays)

    def fit(self, parameters, config):
        return [p + 0.1 * (self.cid + 1) for p in parameters], 10 * (self.cid + 1), {}

    def evaluate(self, parameters, config):
        return 0.0, 1, {}


class Dying(GridWrapper):
    """Node ``node`` dies after the first ``after`` exchanges: no message reaches it again."""

    def __init__(self, grid, node, after):
        super().__init__(grid)
        self.node, self.after, self.exchanges = node, after, 0

    def send_and_receive(self, messages, *, timeout=None):
        self.exchanges += 1
        if self.exchanges > self.after:
            messages = [m for m in messages if m.metadata.dst_node_id != self.node]
        return self.inner.send_and_receive(messages, timeout=timeout)


def secure_run(threshold, after, rounds=2, nodes=3):
    """Models and deadline rows of a SecAgg+ run whose node 2 dies after ``after`` exchanges."""
    secagg = {"name": "secaggplus", "num_shares": 1.0, "reconstruction_threshold": threshold}
    out = {"models": [], "rows": []}
    app = ServerApp()

    @app.main()
    def main(grid, context):
        plain = FedAvg(fraction_evaluate=0.0, min_available_nodes=nodes, min_train_nodes=2)
        options = DeadlineOptions(round_timeout=5.0, max_failed_rounds=2)
        out["grid"] = deadline = DeadlineGrid(Dying(grid, 2, after), plain, options)

        def keep(server_round, arrays):
            if server_round:
                out["models"].append(arrays.to_numpy_ndarrays())
                out["rows"].append(deadline.round_report())

        secure = make_private(plain, {"name": "none"}, nodes, 0, secagg)
        secure.start(deadline, named_record(NAMES, START), num_rounds=rounds, evaluate_fn=keep)

    mods = [secagg_mod(lambda _: secagg)]
    client_app = to_client_app(lambda c: StepClient(int(c.node_config[keys.PARTITION_ID])), mods)
    run_local(app, client_app, nodes)
    return out


def survivors_mean(cids):
    """FedAvg of the clients ``cids`` after one step from ``START``."""
    weights = [10 * (c + 1) for c in cids]
    return [
        sum(w * (p + 0.1 * (c + 1)) for w, c in zip(weights, cids, strict=True)) / sum(weights)
        for p in START
    ]


@pytest.mark.parametrize(
    "after", [0, 1, 2, 3], ids=["at-setup", "at-share-keys", "while-training", "at-unmask"]
)
def test_secaggplus_dropout_below_threshold_sums_the_survivors_and_is_one_loss(after, caplog):
    caplog.set_level(logging.WARNING)
    out = secure_run(0.67, after)  # 3 sampled: 2 shares of each node's keys unmask it
    survivors = [0, 2] if after < 3 else [0, 1, 2]  # at unmask its masked update is in
    # stochastic rounding of each weighted value (< 2 range / q) and of each weight (< 1/q,
    # times values within +-range), over the total weight w / max_weight (as test_secagg.py)
    ratios = sum(10 * (c + 1) / 1000.0 for c in survivors)
    bound = len(survivors) * (2 * 8.0 / 2**22 + 8.0 / 2**22) / ratios
    for got, want in zip(out["models"][0], survivors_mean(survivors), strict=True):
        assert np.max(np.abs(got - want)) <= bound
    assert out["rows"][0] == {"train_missing": [2], "train_late": [], "train_failed": []}
    assert out["rows"][1]["train_missing"] == [2]  # the next round runs without it too
    assert not any(r.get("skipped") for r in out["rows"])
    assert out["grid"].run_report()["deadline"] == {
        "missing": 2, "failed_nodes": 0, "late_replies": 0, "skipped_rounds": 0
    }  # fmt: skip
    assert out["grid"].failed_in_a_row == 0
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("fedflower")]
    rounds = (1, 2) if after < 3 else (2,)  # dead at unmask, its masked update is in the sum
    assert lines == [
        f"round {r}: SecAgg+ summed the updates of 2 of 3 sampled nodes" for r in rounds
    ]


def test_secaggplus_dropout_above_threshold_skips_the_round_once(caplog):
    caplog.set_level(logging.WARNING)
    with pytest.raises(FederationError, match="2 rounds in a row skipped"):
        secure_run(1.0, 2, rounds=3)  # every node's keys need all 3 shares
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("fedflower")]
    assert len(lines) == 2  # one line a skipped round, not one a stage
    assert lines[0].startswith("train round 1 skipped (model unchanged): SecAgg+ halted: 2 of 3")
    assert "needs 3 of its 3 key shares" in lines[0]
