"""The Flower app of ``flwr run``: run config -> Hydra config, node clients, same results as
simulation (run in-process on the LocalGrid, without SuperLink processes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY
from flwr.app import RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.grid import InMemoryGrid
from helpers import FakeGrid
from hydra.errors import HydraException
from omegaconf import DictConfig

from fedflower.client.keras_client import KerasClient
from fedflower.components import model_factory
from fedflower.data.source import ClientData
from fedflower.deploy.app import (
    NodeClient,
    check_simulated_nodes,
    client_app,
    node_client_fn,
    num_classes_of,
    run_key,
    stamp_grid,
)
from fedflower.deploy.config import experiment_config, output_dir, split_overrides
from fedflower.engine.local import LocalGrid
from fedflower.errors import ConfigError, DataError


def test_run_config_overrides_compose_like_the_cli(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = experiment_config({"overrides": "num_rounds=7 'model.hidden_units=[8, 4]' seed=3"})
    expected = make_cfg(["num_rounds=7", "model.hidden_units=[8, 4]", "seed=3"])
    assert cfg == expected
    assert experiment_config({}) == make_cfg([])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("strategy=nope", "unknown option 'nope' for strategy"),
        ("no_such_key=1", "unknown config key 'no_such_key'"),
        ("num_rounds='3", "cannot be split"),
    ],
)
def test_bad_run_config_overrides_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        experiment_config({"overrides": text})


def test_split_overrides_keeps_quoted_values() -> None:
    assert split_overrides("a=1  'b=[1, 2]'") == ["a=1", "b=[1, 2]"]


def test_output_dir_default_and_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert output_dir({}, 42) == Path("outputs/deploy/run-42")
    assert (tmp_path / "outputs/deploy/run-42").is_dir()
    assert output_dir({"output-dir": str(tmp_path / "x")}, 1) == tmp_path / "x"


def test_num_classes_from_the_output_bias() -> None:
    assert num_classes_of([np.zeros((4, 1)), np.zeros(1)]) == 2
    assert num_classes_of([np.zeros((4, 5)), np.zeros(5)]) == 5


def node_client(
    tiny_cfg: Callable[..., DictConfig], features: int, labels: list[int]
) -> KerasClient:
    cfg = tiny_cfg()
    y = np.array(labels)
    x = np.zeros((len(y), features), np.float32)
    data = ClientData(x, y, x[:1], y[:1])
    return NodeClient(lambda shape, k: model_factory(cfg, shape, k)(), data)


MLP_NAMES = ["hidden_0/kernel", "hidden_0/bias", "output/kernel", "output/bias"]
"""The variable paths of ``model=mlp``: the keys its weights travel under."""


def global_weights(tiny_cfg: Callable[..., DictConfig], features: int) -> list[np.ndarray]:
    return model_factory(tiny_cfg(), (features,), 2)().get_weights()


def test_node_client_trains_when_its_data_fits(tiny_cfg: Callable[..., DictConfig]) -> None:
    client = node_client(tiny_cfg, 5, [0, 1, 1, 0])
    weights, n, metrics = client.fit(global_weights(tiny_cfg, 5), {"local-epochs": 1})
    assert n == 4 and [w.shape for w in weights] == [(5, 128), (128,), (128, 1), (1,)]
    assert np.isfinite(metrics["train_loss"])


def test_node_client_names_a_feature_count_mismatch(tiny_cfg: Callable[..., DictConfig]) -> None:
    client = node_client(tiny_cfg, 3, [0, 1])
    with pytest.raises(
        DataError, match="expects 5 features per example but this node's data has 3"
    ):
        client.fit(global_weights(tiny_cfg, 5), {})


def test_node_client_rejects_labels_the_model_cannot_output(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    client = node_client(tiny_cfg, 5, [0, 1, 2])
    with pytest.raises(DataError, match="labels go up to 2 but the global model has 2 classes"):
        client.evaluate(global_weights(tiny_cfg, 5), {})


def test_async_strategy_sends_to_the_exact_deployed_node_ids() -> None:
    """Deployed SuperNodes have uint64 ids above 2**53; sampling must not round them."""
    from fedflower.strategies.fedbuff import FedBuff
    from flwr.app import ArrayRecord, ConfigRecord

    ids = [18202563475846316033, 1537970059732706817, 11027713279611365379, 7]
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 1
    from fedflower.engine.clock import WallClock
    from fedflower.server.async_strategy import AsyncLoop

    strategy = FedBuff(concurrency=3, buffer_size=2)
    strategy._begin(ArrayRecord([np.zeros(2, np.float32)]))
    grid = FakeGrid(ids)
    loop = AsyncLoop(strategy, grid, WallClock(), True, 1, 60.0, 60.0, ConfigRecord())  # type: ignore[arg-type]
    loop.dispatch()  # the loop's first transition: tasks for random idle nodes
    assert len(grid.sent) == 3 and set(grid.sent) <= set(ids)
    assert sorted(t.node_id for t in strategy.table.tasks.values()) == sorted(grid.sent)


class SimulatedGrid(InMemoryGrid):
    """Flower's simulation grid with ``nodes`` registered SuperNodes (no state behind it)."""

    def __init__(self, nodes: int) -> None:
        self.nodes = list(range(1, nodes + 1))

    def get_node_ids(self) -> list[int]:
        return self.nodes


def test_too_few_simulated_supernodes_fail_at_once_with_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        check_simulated_nodes(SimulatedGrid(2), num_clients=10, wait=0.0)
    message = str(err.value)
    assert "runs 2 SuperNodes" in message and "num_clients=10" in message
    assert '--federation-config "num-supernodes=10"' in message
    assert "overrides='num_clients=2'" in message
    check_simulated_nodes(SimulatedGrid(3), num_clients=3, wait=0.0)  # enough: no error
    check_simulated_nodes(LocalGrid(client_app, 2), num_clients=10, wait=0.0)  # not Flower's


def deployed_train_replies(
    weights: list[np.ndarray], extra: list[str], nodes: list[dict[str, Any]]
) -> list[RecordDict]:
    """One training task from ``weights`` per node through the deployed ClientApp."""
    from flwr.app import ConfigRecord, Message, MessageType

    from fedflower import keys
    from fedflower.wire import named_record

    overrides = [*TINY, *extra]
    run_config = {"overrides": " ".join(overrides), "output-dir": "unused"}
    grid = LocalGrid(client_app, len(nodes), nodes, run_config)
    config = ConfigRecord({keys.LOCAL_EPOCHS: 1, keys.BATCH_SIZE: 32, keys.SERVER_ROUND: 1})
    content = RecordDict({keys.ARRAYS: named_record(MLP_NAMES, weights), keys.CONFIG: config})
    messages = [
        Message(content, dst_node_id=node, message_type=MessageType.TRAIN)
        for node in grid.get_node_ids()
    ]
    replies = sorted(grid.send_and_receive(messages), key=lambda r: r.metadata.src_node_id)
    assert not any(r.has_error() for r in replies)
    return [r.content for r in replies]


@pytest.mark.usefixtures("task_identity")
def test_deployed_client_attacks_only_when_the_run_asks_and_the_node_is_malicious(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    from fedflower import keys

    # a red team's node, a node that says it is honest, a partitioned node of the seed's share
    nodes: list[dict[str, Any]] = [
        {"partition-id": 0, "num-partitions": 3, keys.MALICIOUS: True},
        {"partition-id": 1, "num-partitions": 3, keys.MALICIOUS: False},
        {"partition-id": 2, "num-partitions": 3},
    ]
    attack = ["attack=sign_flip", "attack.fraction=1.0"]  # every partition in the seed's share
    weights = global_weights(tiny_cfg, 20)
    honest = deployed_train_replies(weights, attack, nodes)
    attacked = deployed_train_replies(weights, [*attack, "attack.in_deployment=true"], nodes)
    assert not any(keys.ATTACK in c for c in honest)  # asked for no deployment attack: none
    assert [keys.ATTACK in c for c in attacked] == [True, False, True]
    for before, after, is_attacked in zip(honest, attacked, [True, False, True], strict=True):
        w = before.array_records[keys.ARRAYS].to_numpy_ndarrays()
        got = after.array_records[keys.ARRAYS].to_numpy_ndarrays()
        for g, h, a in zip(weights, w, got, strict=True):
            want = g - (h - g) if is_attacked else h  # sign flip: -delta
            np.testing.assert_allclose(a, want, rtol=1e-6, atol=1e-6)
        assert is_attacked == any(not np.array_equal(h, a) for h, a in zip(w, got, strict=True))


def test_lie_is_refused_in_a_deployment(tiny_cfg: Callable[..., DictConfig]) -> None:
    from fedflower.server.rules import validate

    with pytest.raises(ConfigError, match="attack=lie cannot run in a deployment"):
        validate(tiny_cfg("attack=lie", "attack.in_deployment=true"))
    with pytest.raises(HydraException, match="in_deployment"):  # typed: Hydra refuses it
        tiny_cfg("attack=sign_flip", "attack.in_deployment=maybe")


def test_a_runs_tasks_share_the_nodes_data_and_model_and_a_new_run_starts_afresh(
    tiny_cfg: Callable[..., DictConfig],
) -> None:
    from flwr.app import Context

    def task(run_id: int, overrides: list[str] = TINY) -> KerasClient:
        node_config = {"partition-id": 0, "num-partitions": 3}
        run_config = {"overrides": " ".join(overrides)}
        context = Context(run_id, 1, node_config, RecordDict(), run_config)
        assert run_key(context) == f"{run_id} {' '.join(overrides)}"
        client = node_client_fn(context)
        client.set_parameters(global_weights(tiny_cfg, client.data.x_train.shape[1]))
        return client

    first, second = task(11), task(11)  # two tasks of one run in a warm task worker
    assert second.data is first.data and second.model is first.model
    other = task(12)  # the same overrides in another run: nothing reused
    assert other.data is not first.data and other.model is not first.model
    assert task(12, [*TINY, "seed=1"]).model is not other.model


def test_the_servers_stamps_are_written_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from fedflower.deploy.app import SERVER_LINE, SERVER_STAMPS_ENV

    quiet = FakeGrid()
    monkeypatch.delenv(SERVER_STAMPS_ENV, raising=False)
    stamp_grid(quiet)  # type: ignore[arg-type]
    assert "push_messages" not in vars(quiet)  # the grid is left as it is

    grid = FakeGrid()
    grid.pull_messages = lambda ids: [f"reply to {i}" for i in ids][:1]  # type: ignore[attr-defined]
    monkeypatch.setenv(SERVER_STAMPS_ENV, "1")
    stamp_grid(grid)  # type: ignore[arg-type]
    assert grid.push_messages([]) == []
    assert grid.pull_messages(["m0", "m1"]) == ["reply to m0"]  # type: ignore[attr-defined]
    assert grid.pull_messages([]) == []  # type: ignore[attr-defined]  (no reply: no line)
    lines = [line.split(" ", 1) for line in capsys.readouterr().out.splitlines()]
    assert [word for word, _ in lines] == [SERVER_LINE, SERVER_LINE]
    pushed, pulled = (json.loads(fields) for _, fields in lines)
    assert pushed["push_start"] <= pushed["pushed"] <= pulled["pulled"]
    assert (pushed["messages"], pulled["replies"]) == (0, 1)
