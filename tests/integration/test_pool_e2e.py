"""``simulation.workers=2`` gives the same run as one process, round by round."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import run_rows
from omegaconf import DictConfig

from fedflower.engine import pool
from fedflower.experiment import run

QUIET = ["output.save_model=false", "output.plots=false", "checkpoint.every=0"]


def workers() -> set[psutil.Process]:
    """Child processes, except multiprocessing's resource tracker (it lives as long as we do)."""
    children = psutil.Process().children(recursive=True)
    return {p for p in children if "resource_tracker" not in " ".join(p.cmdline())}


def rows(out: Path) -> list[dict[str, Any]]:
    return run_rows(out)


def workers_at_once(monkeypatch: pytest.MonkeyPatch, **options: Any) -> None:
    """Give the engine's ``PoolGrid`` these ``options`` (when its workers start, who runs)."""

    class AtOnce(pool.PoolGrid):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, **options})

    monkeypatch.setattr(pool, "PoolGrid", AtOnce)


FEDBUFF = ["strategy=fedbuff", "strategy.concurrency=3", "strategy.buffer_size=2"]
WORKERS_ONLY = {"inline": False}  # every client in the workers (this process waits for them)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "options"),
    [
        (["strategy=fedavg"], WORKERS_ONLY),
        (["strategy=fedprox", "compression=topk_int8"], WORKERS_ONLY),
        ([*FEDBUFF, "latency=lognormal"], WORKERS_ONLY),
        (["num_rounds=5"], {"start_after": 0.0}),  # workers join mid-run; clients run here first
        (["num_rounds=5"], {}),  # the default: a short run never starts them
    ],
    ids=["fedavg", "fedprox-topk-int8", "fedbuff-virtual-clock", "joining", "short-run"],
)
def test_two_workers_give_the_rows_of_one_process_in_every_round(
    tiny_cfg: Callable[..., DictConfig],
    tmp_path: Path,
    overrides: list[str],
    options: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    common = ["num_clients=4", "num_rounds=3", *overrides, *QUIET]
    run(tiny_cfg(*common, "simulation.workers=1"), tmp_path / "one")
    workers_at_once(monkeypatch, **options)
    before = workers()
    run(tiny_cfg(*common, "simulation.workers=2"), tmp_path / "two")
    one, two = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert len(one) >= 3
    assert one == two
    assert workers() == before  # the workers stopped


@pytest.mark.slow
def test_one_backend_in_worker_groups_gives_the_rows_of_one_process(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """``simulation.backends=[tensorflow]`` moves the clients to a worker of that backend:
    the same run, round by round."""
    common = ["num_clients=3", "num_rounds=3", *QUIET]
    run(tiny_cfg(*common), tmp_path / "one")
    run(tiny_cfg(*common, "simulation.backends=[tensorflow]"), tmp_path / "group")
    assert rows(tmp_path / "one") == rows(tmp_path / "group")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_a_tensorflow_and_jax_federation_trains_as_a_tensorflow_one(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """Clients alternate between TensorFlow and JAX workers; the server (TensorFlow) averages
    their models, keyed by variable path, to the accuracy of an all-TensorFlow run."""
    common = ["num_clients=4", "num_rounds=3", *QUIET]
    run(tiny_cfg(*common), tmp_path / "tf")
    run(tiny_cfg(*common, "simulation.backends=[tensorflow,jax]"), tmp_path / "mixed")
    tf, mixed = rows(tmp_path / "tf"), rows(tmp_path / "mixed")
    assert [r["round"] for r in mixed] == [r["round"] for r in tf]
    assert all(r["train_clients"] == 4 for r in mixed)  # no client failed
    for a, b in zip(tf, mixed, strict=True):
        assert b["accuracy"] == pytest.approx(a["accuracy"], abs=0.01)
        assert b["loss"] == pytest.approx(a["loss"], abs=0.01)


SCRIPT = """\
import fedflower

fedflower.run(
    "num_clients=4", "num_rounds=2", "simulation.workers=2", "simulation.start_workers_after=0",
    "output.save_model=false", "output.plots=false", "checkpoint.every=0", "progress=false",
    output_dir="run",
)
print("finished")
"""


@pytest.mark.slow
def test_a_script_without_a_main_guard_runs_once_with_workers(tmp_path: Path) -> None:
    # spawn imports the parent's main script in each child; without the engine hiding it,
    # every worker started this run again, failed, and the parent hung writing to it
    (tmp_path / "script.py").write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "script.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("finished") == 1
    assert "bootstrapping" not in done.stderr
    assert (tmp_path / "run" / "metrics.jsonl").exists()
