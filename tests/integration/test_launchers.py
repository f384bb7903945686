"""Sweeps on Hydra's launcher plugins (parallel jobs), read by ``fedflower-compare`` unchanged.

``hydra/launcher=joblib`` runs a sweep's jobs in parallel processes on this machine;
``submitit_local`` runs them as submitit jobs, as ``submitit_slurm`` does on a Slurm cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_sweep import compare, sweep  # the sweep helpers of the default launcher's test

LAUNCHERS = {
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_sweep_on_a_launcher_is_compared_as_any_sweep(tmp_path: Path, launcher: str) -> None:
    out = sweep(tmp_path, launcher, "strategy=fedavg,fedprox", "seed=0", *LAUNCHERS[launcher])
    assert len(sorted(out.rglob("results.json"))) == 2
    text, table = compare(out)
    assert [r["config"] for r in table] == ["strategy=fedavg", "strategy=fedprox"]
    assert all(r["seeds"] == "1" and 0.5 < float(r["final_accuracy_mean"]) <= 1 for r in table)
    assert "strategy=fedprox" in text
