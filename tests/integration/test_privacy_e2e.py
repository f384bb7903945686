"""End to end: DP runs on the local engine are deterministic, report epsilon, stop on budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dp_accounting
import pytest
from omegaconf import DictConfig

from fedflower.errors import ConfigError
from fedflower.experiment import run
from fedflower.outputs import RunDir
from fedflower.server import privacy

SCORES = ("loss", "accuracy", "fed_loss", "epsilon")


def metrics(out: Path) -> list[dict]:
    return RunDir(out).metrics()


def rdp_epsilon(z: float, rounds: int, delta: float) -> float:
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(z), rounds)
    return float(accountant.get_epsilon(delta))


@pytest.mark.slow
def test_dp_client_run_is_deterministic_and_reports_epsilon(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    overrides = ("privacy=dp_client", "num_rounds=3", "output.plots=false")
    a = run(tiny_cfg(*overrides), tmp_path / "a")
    b = run(tiny_cfg(*overrides), tmp_path / "b")
    rows_a, rows_b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert [[r[k] for k in SCORES] for r in rows_a] == [[r[k] for k in SCORES] for r in rows_b]
    for k, r in enumerate(rows_a, start=1):
        assert r["epsilon"] == pytest.approx(rdp_epsilon(1.0, k, 1e-5), rel=2e-3)
    assert a["privacy"]["epsilon"] == rows_a[-1]["epsilon"]
    assert a["privacy"]["adjacency"].startswith("client-level")
    assert a["final"] == b["final"]


@pytest.mark.slow
def test_budget_stop_saves_what_it_has(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = []
    wrap = privacy.make_private

    def make_private(*args: object, **options: object) -> object:
        built.append(wrap(*args, **options))
        return built[-1]

    monkeypatch.setattr(privacy, "make_private", make_private)
    cfg = tiny_cfg("privacy=dp_server", "privacy.max_epsilon=7.5", "num_rounds=4")
    results = run(cfg, tmp_path)
    assert len(built) == 1  # the private strategy is built once, checked and run
    rows = metrics(tmp_path)
    assert len(rows) == 2  # epsilon 4.73, 7.08, then 9.01 > 7.5
    assert rows[-1]["epsilon"] <= 7.5
    assert results["privacy"]["stopped_for_budget_after"] == 2
    assert (tmp_path / "results.json").exists() and (tmp_path / "model.keras").exists()


@pytest.mark.slow
def test_a_run_refused_for_its_budget_writes_nothing(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = tiny_cfg("privacy=dp_server", "privacy.max_epsilon=0.5")
    with pytest.raises(ConfigError, match=r"max_epsilon 0\.5 is below one round's epsilon"):
        run(cfg, tmp_path / "run")
    assert sorted(p.name for p in tmp_path.rglob("*")) == []
