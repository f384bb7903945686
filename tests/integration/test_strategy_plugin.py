"""The example plugin in examples/strategy-plugin: its math, and installed, end to end.

The slow test installs a copy of the example with pip into a private directory (``--target``)
and runs the ``fedflower`` command with that directory on ``PYTHONPATH``, so the shared
environment is never modified.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from helpers import FakeGrid, run_fedflower

from fedflower import keys
from fedflower.outputs import RunDir

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "strategy-plugin"
FEDFLOWER = Path(sys.executable).with_name("fedflower")
TINY = [
    "num_clients=3",
    "num_rounds=2",
    "dataset.patients_per_hospital=200",
    "dataset.test_patients_per_hospital=100",
    "progress=false",
    "output.save_model=false",
]


@pytest.fixture
def trimmed_mean_cls(monkeypatch: pytest.MonkeyPatch) -> type:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from fedflower_trimmedmean.strategy import TrimmedMean

    return TrimmedMean


def test_example_is_small() -> None:
    lines = (EXAMPLE / "fedflower_trimmedmean" / "strategy.py").read_text().splitlines()
    assert len(lines) < 100


def test_trimmed_mean_ignores_one_outlier_per_end(trimmed_mean_cls: type, task_identity) -> None:
    strategy = trimmed_mean_cls(beta=0.2, min_train_nodes=5, min_available_nodes=5)
    model = [np.zeros((2, 2), np.float32)]
    msgs = list(strategy.configure_train(1, ArrayRecord(model), ConfigRecord(), FakeGrid()))
    values = [1.0, 2.0, 3.0, 1000.0, -1000.0]
    replies = [
        Message(
            RecordDict(
                {
                    keys.ARRAYS: ArrayRecord([np.full((2, 2), v, np.float32)]),
                    keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 10}),
                }
            ),
            reply_to=m,
        )
        for m, v in zip(msgs, values, strict=True)
    ]
    record, _ = strategy.aggregate_train(1, replies)
    assert record is not None
    (result,) = record.to_numpy_ndarrays()
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, 2.0)  # mean of 1, 2, 3 once 1000 and -1000 are cut


def test_bad_beta_is_rejected(trimmed_mean_cls: type) -> None:
    with pytest.raises(ValueError, match="beta"):
        trimmed_mean_cls(beta=0.5)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed into a private directory."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = work / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return site


def fedflower(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    return run_fedflower(args, cwd=cwd, env={"PYTHONPATH": str(site)}, program=FEDFLOWER)


@pytest.mark.slow
def test_installed_plugin_is_listed_and_runs_end_to_end(plugin_site: Path, tmp_path: Path) -> None:
    listed = fedflower(["--list-strategies"], plugin_site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "fedflower_trimmedmean.strategy:TrimmedMean" in listed.stdout
    assert "arXiv:1803.01498" in listed.stdout

    typo = fedflower(["strategy=trimmedmean", "strategy.beta=abc", *TINY], plugin_site, tmp_path)
    assert typo.returncode == 2
    last = typo.stderr.strip().splitlines()[-1]
    assert last.endswith("strategy.beta must be a number, got 'abc'")

    out = tmp_path / "run"
    res = fedflower(
        ["strategy=trimmedmean", "strategy.beta=0.34", *TINY, f"hydra.run.dir={out}"],
        plugin_site,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    results = RunDir(out).results()
    assert results["config"]["strategy"]["name"] == "trimmedmean"
    assert results["config"]["strategy"]["beta"] == 0.34
    assert results["config"]["strategy"]["min_train_nodes"] == 1  # from fedflower's fedavg.yaml
    assert results["final"]["loss"] < results["initial"]["loss"]
    assert results["final"]["accuracy"] >= 0.65


def test_without_the_plugin_the_name_is_unknown(tmp_path: Path) -> None:
    res = fedflower(["strategy=trimmedmean", *TINY], tmp_path / "empty", tmp_path)
    assert res.returncode == 2
    assert "trimmedmean" in res.stderr and "Traceback" not in res.stderr
