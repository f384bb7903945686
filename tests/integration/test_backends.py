"""The default experiment on JAX and PyTorch ends where TensorFlow's does, within a tolerance.

The backends run the same Keras steps on the same seeded batches; only their float32 kernels
differ, so the default run's final central accuracy and loss (0.8830 / 0.2608 on TensorFlow,
bench/results/readme_numbers.md) agree within ``ACCURACY_TOL`` / ``LOSS_TOL``, and a second
run on one backend repeats the first exactly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TENSORFLOW_FINAL = {"accuracy": 0.8830, "loss": 0.2608}
"""The default run's final central metrics on TensorFlow (bench/results/readme_numbers.md)."""
ACCURACY_TOL = 0.01
LOSS_TOL = 0.01


def final(backend: str, run_dir: Path) -> dict[str, float]:
    """The final central metrics of ``fedflower backend=<backend>`` (the default experiment)."""
    command = [
        sys.executable, "-m", "fedflower.cli", f"backend={backend}", "progress=false",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((run_dir / "results.json").read_text())["final"]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_default_experiment_agrees_with_tensorflow(backend: str, tmp_path: Path) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    got = final(backend, tmp_path / "a")
    assert got["accuracy"] == pytest.approx(TENSORFLOW_FINAL["accuracy"], abs=ACCURACY_TOL)
    assert got["loss"] == pytest.approx(TENSORFLOW_FINAL["loss"], abs=LOSS_TOL)
    assert final(backend, tmp_path / "b") == got  # the same seed: the same metrics
