"""Checkpoint files: atomic, arrays and JSON round-trip, config check, optimizer state."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedflower.aggregation import ServerAdam
from fedflower.errors import ConfigError
from fedflower.server.checkpoint import (
    FILENAME,
    check_resumable,
    load,
    rng_state,
    save,
    set_rng_state,
)


def test_state_round_trips_with_arrays_and_leaves_no_temp_file(tmp_path: Path) -> None:
    state = {
        "round": 3,
        "config": {"seed": 0, "strategy": {"name": "fedavg"}},
        "model": [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.int64)],
        "objects": {"opt": {"m": None, "v": [np.full(3, 0.5)]}, "rows": [{"round": 1}]},
    }
    path = tmp_path / FILENAME
    save(path, state)
    save(path, state)  # replaces the previous one
    got = load(path)
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]
    assert got["round"] == 3 and got["config"] == state["config"]
    assert got["objects"]["opt"]["m"] is None and got["objects"]["rows"] == [{"round": 1}]
    for a, b in zip(got["model"], state["model"], strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got["objects"]["opt"]["v"][0], np.full(3, 0.5))


def test_bytes_in_a_nodes_state_round_trip(tmp_path: Path) -> None:
    """SecAgg+ keeps its keys as bytes in a node's Context.state, which is checkpointed."""
    state = {"objects": {"nodes": {"1": {"secagg": {"sk": b"\x00\xffkey", "pk": [b"a", b""]}}}}}
    save(tmp_path / FILENAME, state)
    assert load(tmp_path / FILENAME)["objects"] == state["objects"]


def test_another_config_is_refused_with_the_first_difference(tmp_path: Path) -> None:
    config = {"seed": 0, "num_rounds": 5, "strategy": {"name": "fedadam", "eta": 0.1}}
    save(tmp_path / FILENAME, {"config": config})
    check_resumable(tmp_path, {**config, "resume": str(tmp_path), "progress": False})
    with pytest.raises(ConfigError, match=r"another config: strategy.eta was 0.1, now 0.2$"):
        check_resumable(tmp_path, {**config, "strategy": {"name": "fedadam", "eta": 0.2}})
    with pytest.raises(ConfigError, match=r"no checkpoint\.npz there"):
        check_resumable(tmp_path / "elsewhere", config)


def test_random_states_are_restored() -> None:
    state = rng_state()
    first = (random.random(), np.random.random())
    set_rng_state(state)
    assert (random.random(), np.random.random()) == first


def test_server_optimizer_moments_survive_a_state_dict_round_trip() -> None:
    rng = np.random.default_rng(0)
    x = [rng.standard_normal(4).astype(np.float32)]
    targets = [[rng.standard_normal(4).astype(np.float32)] for _ in range(4)]
    straight, restored = ServerAdam(0.1, 0.9, 0.99, 1e-3), ServerAdam(0.1, 0.9, 0.99, 1e-3)
    a = b = x
    for t in targets[:2]:
        a = straight.step(a, t)
        b = restored.step(b, t)
    fresh = ServerAdam(0.1, 0.9, 0.99, 1e-3)
    fresh.load_state_dict(restored.state_dict())
    for t in targets[2:]:
        a, b = straight.step(a, t), fresh.step(b, t)
    np.testing.assert_array_equal(a[0], b[0])


def test_an_async_run_off_the_virtual_clock_writes_none_and_refuses_to_resume(
    tmp_path: Path,
) -> None:
    from flwr.clientapp import ClientApp

    from fedflower.engine.latency import LatencyModel
    from fedflower.engine.local import LocalGrid
    from fedflower.server.app import CheckpointOptions, checkpointer
    from fedflower.server.pipeline import build_pipeline
    from fedflower.server.recorder import Recorder
    from strategies.fedbuff import FedBuff

    recorder = Recorder(tmp_path, 2, progress=False)
    local = LocalGrid(ClientApp(), 2)

    def pipeline(latency: LatencyModel | None, **client: float) -> Any:
        options = {"local_epochs": 2, **client}
        return build_pipeline(
            local, FedBuff(), latency=latency, compression=None, client_options=options, seed=0
        )

    wall, virtual = pipeline(None), pipeline(LatencyModel())
    straggling = pipeline(LatencyModel(), straggler_fraction=0.5)
    write, resume = CheckpointOptions({}, every=1), CheckpointOptions({}, every=1, resume=True)
    assert checkpointer(write, wall, recorder) is None
    assert checkpointer(write, straggling, recorder) is None
    saved = checkpointer(write, virtual, recorder)
    assert saved is not None
    assert list(saved.objects) == ["strategy0", "recorder", "meter", "clock", "nodes"]
    with pytest.raises(ConfigError, match=r"^resume: an asynchronous run is checkpointed only"):
        checkpointer(resume, wall, recorder)


@pytest.mark.usefixtures("task_identity")
def test_flowers_loop_resumed_continues_with_the_same_rounds_and_models(tmp_path: Path) -> None:
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp.strategy import FedAvg

    from fedflower import keys
    from fedflower.engine.local import LocalGrid
    from fedflower.server.checkpoint import Checkpointer, Resumed, checkpointed

    app, seen = ClientApp(), []

    @app.train()
    def train(msg: Message, context: Any) -> Message:
        config = msg.content.config_records[keys.CONFIG]
        seen.append(int(config[keys.SERVER_ROUND]))  # type: ignore[arg-type]
        p, arrays = int(context.node_config[keys.PARTITION_ID]), msg.content[keys.ARRAYS]
        weights = [0.5 * a + p + 1 for a in arrays.to_numpy_ndarrays()]  # type: ignore[union-attr]
        metrics = MetricRecord({keys.NUM_EXAMPLES: 10 * (p + 1)})
        return Message(
            RecordDict({keys.ARRAYS: ArrayRecord(weights), keys.METRICS: metrics}), reply_to=msg
        )

    def run(out: Path, rounds: int, resume: bool = False) -> dict[int, list[np.ndarray]]:
        models: dict[int, list[np.ndarray]] = {}

        def evaluate(rnd: int, arrays: ArrayRecord) -> None:
            models[rnd] = arrays.to_numpy_ndarrays()

        ckpt = Checkpointer(out, {}, every=1, objects={}, resume=resume)
        done, arrays = ckpt.restore() if resume else (0, ArrayRecord([np.zeros(3, np.float32)]))
        strategy = FedAvg(fraction_evaluate=0.0)
        loop = Resumed(strategy, done) if done else strategy
        hook = checkpointed(evaluate, ckpt, done, rounds)  # type: ignore[arg-type]
        loop.start(LocalGrid(app, 2), arrays, num_rounds=rounds - done, evaluate_fn=hook)
        return models

    (tmp_path / "full").mkdir(), (tmp_path / "cut").mkdir()
    full = run(tmp_path / "full", 3)
    seen.clear()
    run(tmp_path / "cut", 1)
    assert load(tmp_path / "cut" / FILENAME)["round"] == 1
    seen.clear()
    resumed = run(tmp_path / "cut", 3, resume=True)
    assert sorted(resumed) == [2, 3] and seen == [2, 2, 3, 3]  # Flower's rounds 1, 2 offset
    for rnd in (2, 3):
        for a, b in zip(full[rnd], resumed[rnd], strict=True):
            np.testing.assert_array_equal(a, b)
    assert load(tmp_path / "cut" / FILENAME)["round"] == 3


def test_a_checkpoint_keyed_by_position_is_refused_in_one_line(tmp_path: Path) -> None:
    """The global model is keyed by variable path; a checkpoint keyed otherwise cannot resume."""
    from flwr.app import ArrayRecord

    from fedflower.server.checkpoint import Checkpointer

    ckpt = Checkpointer(tmp_path, {}, every=1, objects={})
    ckpt.save(1, ArrayRecord([np.zeros(3, np.float32), np.ones(1, np.float32)]), last=True)
    with pytest.raises(
        ConfigError, match=r"variable 'output/kernel' is missing \(received '0', '1'\)"
    ):
        ckpt.restore(["output/kernel", "output/bias"])
    done, arrays = ckpt.restore(["0", "1"])  # the same keys: restored
    assert done == 1 and list(arrays.keys()) == ["0", "1"]
