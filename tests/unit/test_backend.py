"""The ``backend`` option: checked, set before Keras is imported, never switched under Keras."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import pytest
from helpers import run_fedflower

from fedflower.backend import check_backend, use_backend
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
