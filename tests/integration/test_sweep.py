"""``fedflower -m`` sweeps and ``fedflower-compare`` on them, as a user runs them.

Two tiny sweeps (3 hospitals, 2 rounds, logistic regression): strategies x seeds, then
partitions x seeds. Every run directory also holds readable TensorBoard event files.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

TINY_SWEEP = ["experiment=quick", "model=logreg", "progress=false", "output.save_model=false"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", TQDM_DISABLE="1")
    return env


def sweep(tmp_path: Path, name: str, *overrides: str) -> Path:
    out = tmp_path / name
    cmd = [sys.executable, "-m", "fedflower", "-m", *TINY_SWEEP, *overrides]
    proc = subprocess.run(
        [*cmd, f"hydra.sweep.dir={out}"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def compare(out: Path) -> tuple[str, list[dict[str, str]]]:
    code = "from fedflower.compare import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out), "--target", "0.6"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (out / "comparison.csv").open() as fh:
        return proc.stdout, list(csv.DictReader(fh))


@pytest.mark.slow
def test_two_sweeps_and_their_comparison(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    strategies = sweep(tmp_path, "strategies", "strategy=fedavg,fedprox", "seed=0,1")
    partitions = sweep(tmp_path, "partitions", "partition=iid,dirichlet", "seed=0,1")
    runs = sorted(strategies.rglob("results.json"))
    assert len(runs) == 4
    for run in runs:
        events = EventAccumulator(str(run.parent / "tensorboard"))
        events.Reload()
        assert len(events.Tensors("accuracy")) == 2  # one per round

    text, table = compare(strategies)
    assert [r["config"] for r in table] == ["strategy=fedavg", "strategy=fedprox"]
    assert all(r["seeds"] == "2" and float(r["final_accuracy_std"]) > 0 for r in table)
    assert "strategy=fedprox" in text and "±" in text
    assert (strategies / "comparison.png").exists()

    _, table = compare(partitions)
    assert [r["config"] for r in table] == ["partition=dirichlet", "partition=iid"]
    assert all(float(r["bytes_mean"]) > 0 for r in table)
