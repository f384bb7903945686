"""The fedflower command at its edges: a failure before training, Ctrl-C during a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY

pytestmark = pytest.mark.slow


def test_a_command_failing_before_training_leaves_no_output_folder(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,label\n1,0\n,1\n3,0\n")
    done = subprocess.run(
        [sys.executable, "-m", "fedflower", "dataset=csv", f"dataset.path={data}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "column 'a' is empty in line 3" in done.stderr
    assert not (tmp_path / "outputs").exists()


def default_sigint() -> None:
    """Ctrl-C's default action in the child: a shell starts a background job (``make test &``)
    with SIGINT ignored, which its children inherit, and Python then raises no
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_names_the_checkpoint_and_the_resume_command(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [*TINY[:-1], "num_rounds=200", "output.plots=false", "progress=false"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedflower", *args, f"hydra.run.dir={out}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_sigint,  # a suite started in the background ignores SIGINT
    )
    deadline = time.monotonic() + 300
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"fedflower: interrupted; checkpoint {out.resolve()}/checkpoint.npz")
    assert last.endswith(f"resume={out.resolve()}")
    assert "num_rounds=200" in last
