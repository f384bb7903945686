"""fedflower.compare: grouping a sweep's runs by configuration, seeds pooled."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from fedflower.compare import compare, label_of, main, reach


def fake_run(
    root: Path, overrides: list[str], accuracies: list[float], hydra_record: bool = True
) -> None:
    """A run directory as ``fedflower -m`` leaves it: metrics.jsonl, results.json, overrides."""
    name = ",".join(o for o in overrides if not o.startswith("seed="))
    seed = next(o for o in overrides if o.startswith("seed="))
    run = root / (name or ".") / seed
    (run / ".hydra").mkdir(parents=True)
    if hydra_record:
        (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    rows = [
        {
            "round": r + 1,
            "accuracy": a,
            "loss": 1 - a,
            "bytes_down": 100,
            "bytes_up": 50,
            "elapsed": 2.0 * (r + 1),
        }
        for r, a in enumerate(accuracies)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    final = {"accuracy": accuracies[-1], "loss": 1 - accuracies[-1]}
    (run / "results.json").write_text(json.dumps({"final": final}))


@pytest.fixture
def strategy_sweep(tmp_path: Path) -> Path:
    """strategy=fedavg,fedprox seed=0,1: fedprox reaches 0.8 one round earlier."""
    common = "experiment=quick"  # shared by every run: not part of a configuration's name
    fake_run(tmp_path, [common, "strategy=fedavg", "seed=0"], [0.5, 0.7, 0.8, 0.9])
    fake_run(tmp_path, [common, "strategy=fedavg", "seed=1"], [0.5, 0.6, 0.8, 0.8])
    fake_run(tmp_path, [common, "strategy=fedprox", "seed=0"], [0.6, 0.8, 0.85, 0.86])
    fake_run(tmp_path, [common, "strategy=fedprox", "seed=1"], [0.6, 0.8, 0.82, 0.9])
    return tmp_path


def test_label_pools_seeds_and_sorts() -> None:
    assert label_of(["strategy=fedprox", "seed=2", "partition=iid"]) == (
        "partition=iid,strategy=fedprox"
    )
    assert label_of(["seed=1"]) == "base"
    assert label_of(["experiment=quick", "strategy=fedavg", "seed=0"], {"experiment=quick"}) == (
        "strategy=fedavg"
    )


def test_reach_finds_the_first_round_at_target() -> None:
    rows = [
        {"round": 1, "accuracy": 0.7, "elapsed": 1.0},
        {"round": 2, "accuracy": 0.9, "elapsed": 3.0, "virtual_time": 9.0},
    ]
    assert reach(rows, 0.8) == (2, 9.0)
    assert reach(rows, 0.95) is None


def test_strategy_sweep_table(strategy_sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = {row["config"]: row for row in compare(strategy_sweep, target=0.8)}
    printed = capsys.readouterr().out  # not a terminal: the table must still not wrap
    assert "strategy=fedprox" in printed and "0.8500 ± 0.0707" in printed
    assert set(table) == {"strategy=fedavg", "strategy=fedprox"}
    avg, prox = table["strategy=fedavg"], table["strategy=fedprox"]
    assert avg["seeds"] == 2 and prox["seeds"] == 2
    assert avg["final_accuracy_mean"] == pytest.approx(0.85)
    assert avg["final_accuracy_std"] == pytest.approx(0.0707107, rel=1e-5)  # sample std
    assert (avg["rounds_to_target"], prox["rounds_to_target"]) == (3.0, 2.0)
    assert (avg["seconds_to_target"], prox["seconds_to_target"]) == (6.0, 4.0)
    assert avg["bytes_mean"] == 4 * 150
    with (strategy_sweep / "comparison.csv").open() as fh:
        assert [r["config"] for r in csv.DictReader(fh)] == ["strategy=fedavg", "strategy=fedprox"]
    assert (strategy_sweep / "comparison.png").stat().st_size > 10_000


def test_two_factor_sweep_from_directory_names(tmp_path: Path) -> None:
    for strategy in ("fedavg", "fedprox"):
        for partition, acc in (("iid", 0.9), ("dirichlet", 0.6)):
            for seed in (0, 1, 2):
                overrides = [f"partition={partition}", f"strategy={strategy}", f"seed={seed}"]
                fake_run(tmp_path, overrides, [acc - 0.1, acc], hydra_record=False)
    table = compare(tmp_path, out=tmp_path / "cmp")
    assert [r["config"] for r in table] == [
        "partition=dirichlet,strategy=fedavg",
        "partition=dirichlet,strategy=fedprox",
        "partition=iid,strategy=fedavg",
        "partition=iid,strategy=fedprox",
    ]
    assert all(r["seeds"] == 3 and r["final_accuracy_std"] == 0.0 for r in table)
    # default target: the lowest mean final accuracy (here every seed of each config reaches it)
    assert {r["target_accuracy"] for r in table} == {0.6}
    assert [r["reached"] for r in table] == [3, 3, 3, 3]
    assert [r["rounds_to_target"] for r in table] == [2.0, 2.0, 1.0, 1.0]
    assert (tmp_path / "cmp" / "comparison.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere"], "nowhere is not a directory"),
        (["."], "no finished run"),
        ([".", "--target", "1.5"], r"--target must be a number in \[0, 1\], got 1.5"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fedflower-compare: error:")
    assert re.search(message, err)
