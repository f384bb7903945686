"""The Flower app of ``flwr run`` end to end, in-process on the LocalGrid (no SuperLink
processes): the same results as simulation, a node with bad data, a slim client install,
the ``fedflower`` command on a client-only install."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, run_app_in_process
from helpers import run_rows
from omegaconf import DictConfig

from fedflower.experiment import run

pytestmark = pytest.mark.slow


def needs(module: str) -> pytest.MarkDecorator:
    """Skip where ``module`` (a Keras backend's package) is not installed."""
    missing = importlib.util.find_spec(module) is None
    return pytest.mark.skipif(missing, reason=f"{module} is not installed")


COMPARED = ("round", "loss", "accuracy", "fed_loss", "fed_accuracy", "bytes_down", "bytes_up")


def rows(out: Path) -> list[dict[str, Any]]:
    return run_rows(out, keep=COMPARED)


def test_deployed_app_reproduces_the_simulation(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    overrides = [*TINY, "output.plots=false"]
    simulated = run(tiny_cfg("output.plots=false"), tmp_path / "sim")
    nodes = [{"partition-id": i, "num-partitions": 3} for i in range(3)]
    deployed = run_app_in_process(overrides, tmp_path / "dep", nodes)
    sim_rows, dep_rows = rows(tmp_path / "sim"), rows(tmp_path / "dep")
    assert len(dep_rows) == 2
    for a, b in zip(sim_rows, dep_rows, strict=True):
        for key in COMPARED:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    assert deployed["final"]["accuracy"] == pytest.approx(simulated["final"]["accuracy"], abs=1e-6)
    assert (tmp_path / "dep" / "model.keras").is_file()


OPTIONS = {  # every personalization option and drift strategy; the mlp has no normalisation
    "finetune": ["personalization=finetune"],
    "fedper": ["personalization=fedper"],
    "fedrep": ["personalization=fedrep", "personalization.fedrep_head_epochs=1"],
    "fedbn": ["personalization=fedbn", "personalization.local_layers=[hidden_0]"],
    "ditto": ["personalization=ditto"],
    "apfl": ["personalization=apfl"],
    "scaffold": ["strategy=scaffold"],
    "fednova": ["strategy=fednova"],
    "feddyn": ["strategy=feddyn"],
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_deployed_nodes_run_every_personalization_and_drift_option_as_in_simulation(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path, option: str
) -> None:
    overrides = [*TINY, "num_clients=2", "output.plots=false", *OPTIONS[option]]
    simulated = run(tiny_cfg(*overrides[len(TINY) :]), tmp_path / "sim")
    nodes = [{"partition-id": i, "num-partitions": 2, "site-name": f"h{i}"} for i in range(2)]
    deployed = run_app_in_process(overrides, tmp_path / "dep", nodes)
    sites = deployed["per_client"]["sites"]
    assert [s["client"] for s in sites] == ["h0", "h1"]  # the node config's site name
    sim_sites = simulated["per_client"]["sites"]
    personal = OPTIONS[option][0].startswith("personalization")
    models = ["accuracy", "personal_accuracy"] if personal else ["accuracy"]
    for model in models:
        got, want = [s[model] for s in sites], [s[model] for s in sim_sites]
        assert got == pytest.approx(want, abs=1e-6), model
    assert deployed["final"]["accuracy"] == pytest.approx(simulated["final"]["accuracy"], abs=1e-6)


def test_a_node_with_bad_data_is_reported_and_the_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "site.csv"
    bad.write_text("a,b\n1,2\n")
    nodes: list[dict[str, Any]] = [
        {"partition-id": 0, "num-partitions": 3},
        {"data-path": str(bad)},
        {"partition-id": 2, "num-partitions": 3},
    ]
    with caplog.at_level(logging.WARNING):
        results = run_app_in_process([*TINY, "output.plots=false"], tmp_path / "out", nodes)
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert any("no label column 'label'" in f and "site.csv" in f for f in failures)
    assert results["totals"]["rounds"] == 2
    assert results["final"]["accuracy"] > results["initial"]["accuracy"]


def run_script(
    script: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a Python script with arguments in a fresh interpreter, output captured."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.mark.parametrize(
    ("backend", "blocked"),
    [
        ("tensorflow", ""),
        pytest.param("jax", "tensorflow", marks=needs("jax")),
        pytest.param("torch", "tensorflow", marks=needs("torch")),
    ],
)
def test_slim_client_imports_no_simulation_or_plotting_package(
    tmp_path: Path, backend: str, blocked: str
) -> None:
    """A SuperNode with a data file runs the ClientApp with ray, datasets, flwr-datasets,
    scikit-learn, pandas and matplotlib made unimportable; on JAX and PyTorch, TensorFlow too
    (what a ``fedflower[client-jax]`` or ``[client-torch]`` install lacks)."""
    script = tmp_path / "slim.py"
    script.write_text(SLIM_CLIENT)
    res = run_script(script, str(tmp_path / "site.csv"), blocked, env={"KERAS_BACKEND": backend})
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"OK backend={backend} loaded=[]" in res.stdout


SLIM_CLIENT = """
import sys
BLOCKED = ("ray", "datasets", "flwr_datasets", "sklearn", "matplotlib", "pandas",
           *filter(None, sys.argv[2].split(",")))
for name in BLOCKED:  # as if not installed: import fails, importlib.util.find_spec gives None
    sys.modules[name] = None
import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.grid import InMemoryGrid
TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
from fedflower.deploy.app import client_app
from fedflower.deploy.local_data import write_csv
rng = np.random.default_rng(0)
x = rng.normal(size=(40, 4)).astype("float32")
path = write_csv(sys.argv[1], x, (x[:, 0] > 0).astype(int))
w = [np.zeros((4, 128), "float32"), np.zeros(128, "float32"),
     np.zeros((128, 1), "float32"), np.zeros(1, "float32")]
names = ["hidden_0/kernel", "hidden_0/bias", "output/kernel", "output/bias"]
record = ArrayRecord(dict(zip(names, map(Array, w))))
content = RecordDict({"arrays": record, "config": ConfigRecord({"batch-size": 8})})
msg = Message(content, dst_node_id=5, message_type="train")
ctx = Context(run_id=1, node_id=5, node_config={"data-path": str(path)}, state=RecordDict(),
              run_config={"overrides": ""})
reply = client_app(msg, ctx)
assert not reply.has_error(), reply.error
assert reply.content["metrics"]["num-examples"] == 32
import keras
loaded = sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in BLOCKED and mod)
print(f"OK backend={keras.backend.backend()} loaded={loaded}")
"""


def test_fedflower_command_on_a_client_only_install_says_what_to_install(tmp_path: Path) -> None:
    script = tmp_path / "cli.py"
    script.write_text(
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'flwr_datasets':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['fedflower', 'num_rounds=1', f'hydra.run.dir={sys.argv[1]}']\n"
        "from fedflower.cli import main\n"
        "main()\n"
    )
    res = run_script(script, str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr[-2000:]
    assert "pip install 'fedflower[sim]'" in res.stderr and "Traceback" not in res.stderr
