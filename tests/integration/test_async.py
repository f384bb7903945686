"""End-to-end asynchronous runs (Keras clients, LocalGrid, virtual clock) through ``run(cfg)``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import run_rows
from omegaconf import DictConfig

from fedflower.errors import ConfigError
from fedflower.experiment import run

QUIET = ["output.save_model=false", "output.plots=false"]


def rows(out: Path) -> list[dict[str, Any]]:
    return run_rows(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy=fedbuff", "strategy.concurrency=3", "strategy.buffer_size=2"],
        ["strategy=fedasync", "strategy.concurrency=3", "strategy.max_staleness=1"],
    ],
    ids=["fedbuff", "fedasync"],
)
def test_async_simulation_is_deterministic_and_learns(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path, strategy: list[str]
) -> None:
    cfg = tiny_cfg("num_clients=4", "num_rounds=4", "latency=lognormal", *strategy, *QUIET)
    first = run(cfg, tmp_path / "a")
    second = run(cfg, tmp_path / "b")
    a, b = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert a == b
    assert [r["version"] for r in a] == [1, 2, 3, 4]
    times = [r["virtual_time"] for r in a]
    assert times == sorted(times) and times[0] > 0
    assert first["virtual_time"] == second["virtual_time"] == times[-1]
    totals = first["async"]
    assert totals["versions"] == 4
    assert totals["tasks"] == sum(totals[k] for k in ("folded", "dropped", "failed", "unfinished"))
    assert first["final"]["accuracy"] > max(0.70, first["initial"]["accuracy"] + 0.1)


@pytest.mark.slow
def test_fedbuff_with_k_equal_n_is_fedavg_in_every_round_end_to_end(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    # equally sized hospitals and the constant latency model: every task lasts exactly as long,
    # so each wave's K = N replies arrive at one virtual time and are all folded before any
    # slot is refilled; every wave starts from the newest model with server-round = version + 1
    common = ["num_rounds=4", "latency=constant", "output.plots=false"]
    fedavg = run(tiny_cfg(*common, "strategy.fraction_evaluate=0.0"), tmp_path / "avg")
    fedbuff = run(
        tiny_cfg(
            *common,
            "strategy=fedbuff",
            "strategy.concurrency=3",
            "strategy.buffer_size=3",
            "strategy.staleness.name=constant",
        ),
        tmp_path / "buff",
    )
    assert fedbuff["async"]["folded"] == 3 * 4 and fedbuff["async"]["tasks"] == 3 * 4
    avg, buff = rows(tmp_path / "avg"), rows(tmp_path / "buff")
    assert [r["round"] for r in avg] == [r["round"] for r in buff] == [1, 2, 3, 4]
    assert [r["staleness_max"] for r in buff] == [0, 0, 0, 0]
    # FedAvg averages the models with float32 sums (the default), FedBuff adds the deltas'
    # float64 mean: the models differ by float32 round-off (~1e-7 relative) every round, and
    # the metrics agree to 1e-6 in every round.
    for a, b in zip(avg, buff, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
        assert b["accuracy"] == pytest.approx(a["accuracy"], abs=1e-9)
    import keras

    want = keras.models.load_model(tmp_path / "avg" / "model.keras").get_weights()
    got = keras.models.load_model(tmp_path / "buff" / "model.keras").get_weights()
    for x, y in zip(got, want, strict=True):
        # 4 rounds of training from models that differed by float32 round-off each round:
        # measured at most 1.1e-6 (kernels) and 1.0e-5 (a bias) of the layer's largest value
        assert np.max(np.abs(x - y)) <= 2e-5 * np.max(np.abs(y))
    assert fedbuff["final"] == pytest.approx(fedavg["final"], rel=1e-6)


def test_sync_rounds_advance_the_virtual_clock_by_their_slowest_client(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = tiny_cfg(
        "latency=lognormal",
        "latency.latency_s=0.0",
        "latency.seconds_per_example=0.01",
        "strategy.fraction_evaluate=0.0",
        *QUIET,
    )
    result = run(cfg, tmp_path)
    times = [r["virtual_time"] for r in rows(tmp_path)]
    # every round trains the same 3 clients (160 examples, 1 epoch): it lasts as long as the
    # slowest one, 160 * 0.01 * max slowdown plus the transfer of the bytes
    assert times[1] == pytest.approx(2 * times[0], rel=1e-9)
    from fedflower.engine.latency import LatencyModel, LogNormal

    slowest = max(LatencyModel(LogNormal(1.0), seed=0).client_slowdown(n) for n in (1, 2, 3))
    assert times[0] == pytest.approx(160 * 0.01 * slowest, rel=0.01)
    assert result["virtual_time"] == times[-1]


def test_bad_latency_settings_are_config_errors(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"latency\.slowdown\.sigma must be a number >= 0"):
        run(tiny_cfg("latency=lognormal", "latency.slowdown.sigma=-1", *QUIET), tmp_path)
    with pytest.raises(ConfigError, match=r"strategy.buffer_size must be an integer >= 1, got 0"):
        run(tiny_cfg("strategy=fedbuff", "strategy.buffer_size=0", *QUIET), tmp_path)
