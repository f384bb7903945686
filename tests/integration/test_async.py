"""End-to-end asynchronous runs (Keras clients, LocalGrid, virtual clock) through ``run(cfg)``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from fedflower.errors import ConfigError
from fedflower.experiment import run

QUIET = ["output.save_model=false", "output.plots=false"]
TIMING = {"seconds", "elapsed"}


def rows(out: Path) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


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
def test_fedbuff_with_k_equal_n_equals_a_fedavg_round_end_to_end(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    # equally sized hospitals and the constant latency model: the first K = N arrivals are
    # one task per client, all from version 0
    common = ["num_rounds=1", "latency=constant", *QUIET]
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
    assert fedbuff["async"]["folded"] == 3
    assert fedbuff["final"]["loss"] == pytest.approx(fedavg["final"]["loss"], abs=1e-6)
    assert fedbuff["final"]["accuracy"] == pytest.approx(fedavg["final"]["accuracy"], abs=1e-9)


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
    with pytest.raises(ConfigError, match=r"lognormal: sigma must be a finite number >= 0\.0"):
        run(tiny_cfg("latency=lognormal", "latency.slowdown.sigma=-1", *QUIET), tmp_path)
    with pytest.raises(ConfigError, match=r"strategy.buffer_size must be an integer >= 1, got 0"):
        run(tiny_cfg("strategy=fedbuff", "strategy.buffer_size=0", *QUIET), tmp_path)
