"""``fedflower simulation=ray`` and ``make flwr-sim`` print what the user can act on only.

Both start other processes (Ray workers; Flower's SuperLink, simulation process and Ray
workers), each of which imports TensorFlow, Ray and Flower: none of their banners, future or
deprecation warnings and Flower notices reaches the console, and the run's own lines do.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Ray runs on Linux hosts"),
]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NOISE = re.compile(
    "|".join(
        [
            r"FutureWarning",
            r"DeprecationWarning",
            r"[Dd]eprecat",
            r"warnings\.warn",
            r"oneDNN",
            r"absl",
            r"This TensorFlow binary is optimized",
            r"cpu_feature_guard",
            r"[Cc]uda|cuInit|CUDA",
            r"Since flwr",
            r"simulation-config",
            r"configuration not found",
            r"\(pid=\d+",  # any line a Ray worker printed
            r"ClientAppActor",
            r"WARNING",
        ]
    )
)
RESULT_LINES = ("round   1/1 | test loss", "fedflower run summary", "outputs: ")


def as_a_user(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command with none of the quieting variables the test suite sets for itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "FLWR_", "PYTHONW"))}
    env.pop("TQDM_DISABLE", None)
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def assert_quiet(done: subprocess.CompletedProcess[str]) -> None:
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    noise = [line for line in text.splitlines() if NOISE.search(line)]
    assert not noise, "\n".join(noise)
    for line in RESULT_LINES:
        assert line in text, text[-3000:]


def test_ray_simulation_prints_only_the_run(tmp_path: Path) -> None:
    cmd = [str(BIN / "fedflower"), "simulation=ray", "num_rounds=1", "num_clients=3"]
    assert_quiet(as_a_user([*cmd, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path))


def test_flwr_sim_prints_only_the_run(tmp_path: Path) -> None:
    cmd = [str(BIN / "fedflower-deploy"), "simulate", "--nodes", "2", "num_rounds=1"]
    done = as_a_user([*cmd, "--workdir", str(tmp_path)], REPO)  # what `make flwr-sim` runs
    if done.returncode == 2 and "did not come up" in done.stderr:
        pytest.skip(f"Flower's local SuperLink did not start: {done.stderr.strip()}")
    assert_quiet(done)
    assert "2 of 2" in done.stdout  # clients trained per round, from the run's summary
