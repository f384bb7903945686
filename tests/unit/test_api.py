"""fedflower.run / fedflower.sweep: overrides, in-memory data and models, errors, laziness."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import fedflower
from fedflower import api, memory
from fedflower.data import from_arrays
from fedflower.errors import ConfigError, DataError
from fedflower.models import from_memory

TINY = {"num_clients": 2, "num_rounds": 1, "progress": False, "output": {"plots": False}}


def test_import_fedflower_imports_neither_tensorflow_nor_hydra() -> None:
    heavy = "{'tensorflow', 'hydra', 'flwr'}"
    code = f"import sys, fedflower; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_names_resolve() -> None:
    assert fedflower.run is api.run and fedflower.sweep is api.sweep
    assert fedflower.data.from_arrays is from_arrays
    with pytest.raises(AttributeError):
        _ = fedflower.nope  # type: ignore[attr-defined]


def test_keywords_are_overrides_in_hydra_grammar() -> None:
    options = {"num_rounds": 5, "verbose": True, "resume": None, "client": {"metrics": ["auc"]}}
    got = api._overrides(["strategy=fedprox"], options, sweep=False)
    assert got == [
        "strategy=fedprox",
        "num_rounds=5",
        "verbose=true",
        "resume=null",
        "client.metrics=[auc]",
    ]
    assert api._overrides([], {"seed": [0, 1]}, sweep=True) == ["seed=0,1"]


def test_positional_and_keyword_forms_compose_the_same_config() -> None:
    cfg = api.compose(*api._overrides(["strategy=fedprox"], {"num_rounds": 5}, sweep=False))
    assert cfg == api.compose("strategy=fedprox", "num_rounds=5")
    assert cfg.strategy.proximal_mu == 0.01 and cfg.num_rounds == 5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["strategy=nope"], "unknown option 'nope' for strategy; choose one of: "),
        (["nope=1"], "unknown config key 'nope'"),
    ],
)
def test_bad_overrides_raise_the_clis_one_line_config_error(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        api.compose(*overrides)
    assert "\n" not in str(info.value)


def test_a_bad_value_raises_before_any_output(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_rounds must be an integer, got 'abc'"):
        fedflower.run(num_rounds="abc", output_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_sweep_combinations_are_hydras_and_seeds_share_a_directory() -> None:
    combos = api._combinations(["strategy=fedavg,fedprox", "seed=0,1", "num_rounds=2"])
    assert len(combos) == 4 and ["strategy=fedavg", "seed=0", "num_rounds=2"] in combos
    assert api._subdir(["strategy=fedavg", "seed=1", "num_rounds=2"]) == (
        "num_rounds=2,strategy=fedavg/seed=1"
    )


def test_from_arrays_numbers_classes_and_sites() -> None:
    x = np.arange(40, dtype=float).reshape(20, 2)
    y = np.array(["sick", "healthy"] * 10)
    sites = np.array(["b", "a"] * 10)
    data = from_arrays(x, y, clients=sites, x_test=x[:4], y_test=y[:4])
    assert data.num_classes == 2 and data.y[:2].tolist() == [1, 0]
    assert data.groups is not None and data.groups[:2].tolist() == [1, 0]
    held = from_arrays(x, y, test_fraction=0.25)
    assert len(held.y) == 15 and len(held.y_test) == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clients": np.zeros(3)}, "clients must give one id per row, got 3 for 20"),
        ({"y": np.zeros(5)}, "x has 20 rows but y 5 labels"),
        ({"x_test": np.zeros((2, 2))}, "give x_test and y_test together"),
        ({"y": np.full(20, -1)}, "labels must be non-negative integers"),
    ],
)
def test_from_arrays_rejects_bad_arrays_in_one_line(kwargs: dict, message: str) -> None:
    args = {"x": np.zeros((20, 2)), "y": np.zeros(20, dtype=int)} | kwargs
    with pytest.raises(DataError, match=message):
        from_arrays(**args)


def test_a_held_model_is_copied_with_its_weights() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    key = memory.put(model, "model")
    try:
        copy = from_memory((3,), 2, key)
    finally:
        memory.release(key)
    assert copy is not model
    for a, b in zip(copy.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_unknown_key_says_how_in_memory_inputs_work() -> None:
    with pytest.raises(ConfigError, match=r"must name an object given to fedflower\.run"):
        memory.get("model-999999", "model.key")


def test_run_with_arrays_and_a_model_function_writes_a_result(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3)).astype("float32")
    data = from_arrays(x, (x[:, 0] > 0).astype(int), clients=np.arange(120) % 2)

    def build(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
        return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(1, "sigmoid")])

    held = dict(memory._held)  # other test modules may hold objects of their own
    result = fedflower.run(model=build, data=data, output_dir=tmp_path, **TINY)
    assert result.rounds["round"].tolist() == [1]
    assert result.final["accuracy"] == pytest.approx(result.rounds["accuracy"].iloc[-1])
    assert result.config["num_clients"] == 2  # one client per distinct id
    assert result.model.input_shape == (None, 3)
    assert len(result.plot().get_lines()) == 2
    assert memory._held == held  # the run's objects are let go after it
