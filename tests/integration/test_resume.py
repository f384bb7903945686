"""Checkpoint and resume: ``kill -9`` a real run after some round, resume it, and the final
model and ``metrics.jsonl`` equal those of an uninterrupted run (wall-clock fields aside)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from helpers import run_rows, start_fedflower

from fedflower.server.checkpoint import FILENAME, load

ROUNDS = 5
pytestmark = pytest.mark.slow


def fedflower(args: list[str], run_dir: Path) -> subprocess.Popen:
    return start_fedflower([*args, f"hydra.run.dir={run_dir}"])


def checkpoint_round(run_dir: Path) -> int:
    path = run_dir / FILENAME
    return int(load(path)["round"]) if path.is_file() else 0


def rows(run_dir: Path) -> list[dict]:
    return run_rows(run_dir)


def kill_and_resume(tmp_path: Path, args: list[str], rounds: int) -> tuple[dict, dict]:
    """Run ``args`` whole, and killed (SIGKILL) after round (version) 2 or later then resumed.

    Returns the final checkpoint of the resumed run and the one it resumed from.
    """
    full = fedflower(args, tmp_path / "full")
    victim = fedflower(args, tmp_path / "victim")
    deadline = time.monotonic() + 600
    while checkpoint_round(tmp_path / "victim") < 2 and time.monotonic() < deadline:
        assert victim.poll() is None, victim.stderr.read() if victim.stderr else ""
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed = load(tmp_path / "victim" / FILENAME)
    assert 2 <= killed["round"] < rounds  # else the run was not interrupted
    resumed = fedflower([*args, f"resume={tmp_path / 'victim'}"], tmp_path / "resume-log")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read() if resumed.stderr else ""
    assert full.wait(timeout=600) == 0, full.stderr.read() if full.stderr else ""

    victim_dir = tmp_path / "victim"
    want, got = rows(tmp_path / "full"), rows(victim_dir)
    assert len(got) == rounds
    assert got == want  # every round: losses, accuracies, bytes, virtual time
    per_client = [(d / "per_client.jsonl").read_text() for d in (tmp_path / "full", victim_dir)]
    assert per_client[0] == per_client[1]  # every client's evaluation, every round
    final_full, final_resumed = (
        load(tmp_path / "full" / FILENAME),
        load(tmp_path / "victim" / FILENAME),
    )
    assert final_full["round"] == final_resumed["round"] == rounds
    for a, b in zip(final_full["model"], final_resumed["model"], strict=True):
        np.testing.assert_array_equal(a, b)  # bit-identical global model
    return final_resumed, killed


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam", "scaffold"])
def test_resume_after_kill_equals_the_uninterrupted_run(tmp_path: Path, strategy: str) -> None:
    args = [*TINY, f"num_rounds={ROUNDS}", f"strategy={strategy}", "output.plots=false"]
    final_resumed, _ = kill_and_resume(tmp_path, args, ROUNDS)
    if strategy == "fedadam":
        moments = final_resumed["objects"]["strategy0"]["optimizer"]
        assert moments["m"] is not None and moments["v"] is not None
    if strategy == "scaffold":  # the server's and every client's control variate
        assert final_resumed["objects"]["strategy0"]["control"] is not None
        assert len(final_resumed["objects"]["nodes"]) == 3


@pytest.mark.parametrize("method", ["fedper", "fedrep", "ditto", "apfl"])
def test_resume_with_personal_models_equals_the_uninterrupted_run(
    tmp_path: Path, method: str
) -> None:
    args = [*TINY, f"num_rounds={ROUNDS}", f"personalization={method}", "output.plots=false"]
    final_resumed, killed = kill_and_resume(tmp_path, args, ROUNDS)
    assert len(killed["objects"]["nodes"]) == 3  # every site's personal model was checkpointed
    assert len(final_resumed["objects"]["nodes"]) == 3


ASYNC_VERSIONS = 10
ASYNC = {
    # K < concurrency: tasks are in flight at every checkpoint; server momentum has moments
    "fedbuff": [
        "strategy=fedbuff",
        "strategy.buffer_size=2",
        "strategy.server_momentum=0.5",
    ],
    "fedasync": ["strategy=fedasync"],
}


@pytest.mark.parametrize("strategy", sorted(ASYNC))
def test_async_resume_after_kill_equals_the_uninterrupted_run(
    tmp_path: Path, strategy: str
) -> None:
    args = [
        *TINY,
        "num_clients=4",
        f"num_rounds={ASYNC_VERSIONS}",
        *ASYNC[strategy],
        "strategy.concurrency=3",
        "latency=lognormal",
        "latency.jitter=0.5",
        "output.plots=false",
    ]
    final, killed = kill_and_resume(tmp_path, args, ASYNC_VERSIONS)
    assert final["objects"]["strategy0"]["version"] == ASYNC_VERSIONS
    state = killed["objects"]["strategy0"]
    assert state["version"] == killed["round"]
    # tasks were in flight at the checkpoint: the resumed run re-issued them
    in_flight = state["table"]["tasks"]
    assert len(in_flight) >= 1
    assert set(in_flight) <= set(killed["objects"]["clock"]["tasks"])


def test_a_checkpoint_from_another_config_is_refused_in_one_line(tmp_path: Path) -> None:
    args = [*TINY, "num_rounds=1", "output.plots=false", "output.save_model=false"]
    first = fedflower(args, tmp_path / "run")
    assert first.wait(timeout=600) == 0
    other = fedflower([*args, "seed=1", f"resume={tmp_path / 'run'}"], tmp_path / "log")
    _, err = other.communicate(timeout=600)
    assert other.returncode == 2
    assert err.strip().splitlines() == [
        f"fedflower: error: resume={tmp_path / 'run'}: the checkpoint is from another config: "
        "seed was 0, now 1"
    ]


def test_a_finished_run_continues_with_more_rounds_as_if_never_stopped(tmp_path: Path) -> None:
    args = [*TINY, "output.plots=false"]  # TINY: num_rounds=2
    more = [*args, "num_rounds=4"]
    full = fedflower(more, tmp_path / "full")
    short = fedflower(args, tmp_path / "short")
    assert short.wait(timeout=600) == 0, short.stderr.read() if short.stderr else ""
    again = fedflower([*more, f"resume={tmp_path / 'short'}"], tmp_path / "log")
    assert again.wait(timeout=600) == 0, again.stderr.read() if again.stderr else ""
    assert full.wait(timeout=600) == 0, full.stderr.read() if full.stderr else ""
    assert rows(tmp_path / "short") == rows(tmp_path / "full")  # all 4 rounds alike
    for a, b in zip(
        load(tmp_path / "full" / FILENAME)["model"],
        load(tmp_path / "short" / FILENAME)["model"],
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    fewer = fedflower([*args, f"resume={tmp_path / 'short'}"], tmp_path / "log2")
    assert fewer.wait(timeout=600) == 2
    assert "num_rounds must be more than the 4 rounds" in (
        fewer.stderr.read() if fewer.stderr else ""
    )
