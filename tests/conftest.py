"""Shared fixtures: quiet TensorFlow, composed configs, a tiny federation."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from collections.abc import Callable, Iterator, Sequence

import pytest
from flwr.app import Context, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

TINY = [
    "num_clients=3",
    "num_rounds=2",
    "dataset.patients_per_hospital=200",
    "dataset.test_patients_per_hospital=100",
    "progress=false",
]
"""Overrides for a federation small enough to run in a few seconds."""

BACKEND_MODULES = frozenset(
    {
        "test_steps",
        "test_keras_client",
        "test_proximal",
        "test_strategy",
        "test_privacy",
        "test_compression_wire",
        "test_attacks",
        "test_personalization",
        "test_checkpoint",
    }
)
"""Test modules marked ``backend`` (client, strategies, privacy, compression, resume): the
subset ``make test`` runs again on JAX and ``make test-torch`` on PyTorch."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of :data:`BACKEND_MODULES` (unit tests only, slow ones excluded)."""
    for item in items:
        module = Path(str(item.fspath))
        if module.stem in BACKEND_MODULES and module.parent.name == "unit":
            item.add_marker(pytest.mark.backend)


@pytest.fixture
def make_cfg() -> Callable[..., DictConfig]:
    """Compose ``conf/config.yaml`` with overrides, as the CLI does."""

    def _make(overrides: Sequence[str] = ()) -> DictConfig:
        with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _make


@pytest.fixture
def tiny_cfg(make_cfg: Callable[..., DictConfig]) -> Callable[..., DictConfig]:
    """A tiny federation's config plus extra overrides."""

    def _make(*overrides: str) -> DictConfig:
        return make_cfg([*TINY, *overrides])

    return _make


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Act as the ServerApp process: Flower's Messages read its run/node/task ids."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    TaskIdentity.task_id = 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


ROOT = Path(__file__).resolve().parents[1]


def clinical(folder: Path) -> Path:
    """The example clinical table (examples/clinical/make_csv.py)."""
    spec = importlib.util.spec_from_file_location(
        "make_csv", ROOT / "examples" / "clinical" / "make_csv.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.write(folder))


def run_app_in_process(
    overrides: list[str], out: Path, node_configs: list[dict[str, Any]]
) -> dict[str, Any]:
    """The deployment's ServerApp and ClientApp on the in-process LocalGrid."""
    from fedflower.deploy.app import client_app, server_app
    from fedflower.engine.local import LocalGrid

    run_config = {"overrides": " ".join(overrides), "output-dir": str(out)}
    grid = LocalGrid(client_app, len(node_configs), node_configs, run_config)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SUPERLINK_NODE_ID, 1
    context = Context(
        run_id=1,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=run_config,
    )
    server_app(grid, context)
    return json.loads((out / "results.json").read_text())
