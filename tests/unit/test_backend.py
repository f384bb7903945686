"""fedflower.backend: the option checked, set before Keras is imported, never switched under Keras;
the backend read without importing Keras; no TensorFlow off it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from helpers import run_fedflower

from fedflower.backend import check_backend, keras_backend, use_backend
from fedflower.errors import ConfigError


def test_backend_names_are_checked() -> None:
    assert check_backend("jax") == "jax"
    with pytest.raises(ConfigError, match=r"^backend must be one of tensorflow, jax, torch, got"):
        check_backend("theano")


def test_the_backend_keras_runs_on_is_kept_and_another_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KERAS_BACKEND", keras.backend.backend())
    use_backend(keras.backend.backend())
    other = "jax" if keras.backend.backend() != "jax" else "torch"
    with pytest.raises(ConfigError, match=rf"already runs on in this process .*got '{other}'"):
        use_backend(other)
    assert os.environ["KERAS_BACKEND"] == keras.backend.backend()


def test_the_default_backend_reads_keras_backend_from_the_environment(make_cfg) -> None:  # type: ignore[no-untyped-def]
    assert make_cfg().backend == os.environ.get("KERAS_BACKEND", "tensorflow")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("backend=theano", "backend must be one of tensorflow, jax, torch, got 'theano'"),
        ("backend=tensorflow,jax", "backend must be one value per command"),
    ],
)
def test_a_bad_backend_is_one_line_and_exit_2(override: str, message: str, tmp_path: Path) -> None:
    res = run_fedflower(["-m", override] if "," in override else [override], cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("fedflower: error: ") and message in line
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.fixture
def no_keras(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A process that has not imported Keras yet, with an empty ``KERAS_HOME``."""
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    return tmp_path


def test_the_backend_is_keras_order_of_environment_file_default(
    no_keras: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert keras_backend() == "tensorflow"
    (no_keras / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert keras_backend() == "torch"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert keras_backend() == "jax"


def test_an_imported_keras_names_its_own_backend() -> None:
    import keras

    assert keras_backend() == keras.backend.backend()


CLIENT_IMPORT = """
import sys
sys.modules["tensorflow"] = None  # what a fedflower[client-jax] install lacks
import fedflower.deploy.app  # the SuperNode's ClientApp and everything it imports
from fedflower.components import configure_threads
from fedflower.determinism import seed_everything
from fedflower.engine.pool import random_settings
configure_threads(1)
seed_everything(3)
import keras
print(keras.backend.backend(), random_settings())
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_the_client_on_jax_imports_no_tensorflow() -> None:
    """TensorFlow made unimportable: the client modules, seeding and thread limits still run."""
    env = {"KERAS_BACKEND": "jax", "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [sys.executable, "-c", CLIENT_IMPORT],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split("\n")[-2] == "jax (3, False)"
