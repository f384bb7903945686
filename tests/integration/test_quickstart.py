"""The README's "Quickstart: your data, your model", run as written, and the errors it promises.

Every command runs at once in its own directory (each is mostly TensorFlow's import), then
each test checks its own outcome.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import run_fedflower

README = Path(__file__).resolve().parents[2] / "README.md"
TIMEOUT = 900


def quickstart_blocks() -> dict[str, str]:
    """The fenced code blocks of the README's quickstart section, by language (first of each)."""
    text = README.read_text()
    section = text.split("<!-- SECTION:quickstart -->", 1)[1].split("<!-- SECTION:", 1)[0]
    blocks: dict[str, str] = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL):
        blocks.setdefault(lang, body)
    return blocks


def fedflower_commands(bash: str) -> list[list[str]]:
    """The ``fedflower ...`` lines of a bash block (continuations joined) as argument lists."""
    lines = bash.replace("\\\n", " ").splitlines()
    return [shlex.split(line)[1:] for line in lines if line.startswith("fedflower ")]


CONFIG = """defaults:
  - csv
  - _self_
path: patients.csv
label: diagnosis
client_column: site
"""
BAD_FACTORIES = """import keras

def wrong(shape):
    return None

def three(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(3)])
"""
FAST = ["num_rounds=1", "output.plots=false", "output.save_model=false"]
CASES: dict[str, list[str]] = {
    "config-dir": [
        "--config-dir",
        "myconf",
        "dataset=patients",
        "num_clients=3",
        "model=python",
        "model.factory=models.py:three",
        *FAST,
    ],
    "searchpath": [
        "hydra.searchpath=[file://myconf]",
        "dataset=patients",
        "num_clients=3",
        "model=python",
        "model.factory=models.py:wrong",
        *FAST,
    ],
    "import-error": [
        "dataset=csv",
        "dataset.path=patients.csv",
        "dataset.label=diagnosis",
        "dataset.client_column=site",
        "num_clients=3",
        "model=python",
        "model.factory=no_such_module:build",
        *FAST,
    ],
    "missing-path": ["dataset=csv"],
    "bad-label": ["dataset=csv", "dataset.path=patients.csv", "dataset.label=outcome", *FAST],
}
EXPECTED: dict[str, str] = {
    "config-dir": "the model's output has 3 units but the data have 2 classes",
    "searchpath": "must accept (input_shape, num_classes), its signature is (shape)",
    "import-error": "cannot be imported: ModuleNotFoundError: No module named 'no_such_module'",
    "missing-path": "dataset.path must be set",
    "bad-label": "has no label column 'outcome'",
}


def fedflower(args: list[str], cwd: Path) -> tuple[Path, int, str, str]:
    """Run ``fedflower args`` in ``cwd``: (cwd, exit code, stdout, stderr)."""
    done = run_fedflower(args, cwd=cwd, timeout=TIMEOUT)
    return cwd, done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    blocks = quickstart_blocks()
    runs: dict[str, tuple[Path, list[str]]] = {}
    (command,) = fedflower_commands(blocks["bash"])
    example = tmp_path_factory.mktemp("example")
    (example / "make_example.py").write_text(blocks["python"])
    subprocess.run([sys.executable, "make_example.py"], cwd=example, check=True, timeout=TIMEOUT)
    for name, args in {"quickstart": command, **CASES}.items():
        cwd = tmp_path_factory.mktemp(name)
        for made in ("patients.csv", "my_model.keras"):
            shutil.copy(example / made, cwd / made)
        (cwd / "myconf" / "dataset").mkdir(parents=True)
        (cwd / "myconf" / "dataset" / "patients.yaml").write_text(CONFIG)
        (cwd / "models.py").write_text(BAD_FACTORIES)
        runs[name] = (cwd, args)
    with ThreadPoolExecutor(len(runs)) as pool:  # all at once: each is mostly imports
        futures = {name: pool.submit(fedflower, args, cwd) for name, (cwd, args) in runs.items()}
        return {name: future.result() for name, future in futures.items()}


def test_readme_has_the_blocks_the_test_runs() -> None:
    blocks = quickstart_blocks()
    assert 'model.save("my_model.keras")' in blocks["python"]
    (command,) = fedflower_commands(blocks["bash"])
    assert "dataset=csv" in command and "model=keras_file" in command


@pytest.mark.slow
def test_quickstart_trains_the_users_csv_and_model(workdirs: dict[str, tuple]) -> None:
    cwd, code, out, err = workdirs["quickstart"]
    assert code == 0, err
    (results_file,) = cwd.glob("outputs/*/*/results.json")
    results = json.loads(results_file.read_text())
    assert results["totals"]["rounds"] == 5
    assert results["final"]["accuracy"] >= 0.88  # measured 0.9000 (README)
    partition = json.loads((results_file.parent / "partition.json").read_text())
    assert partition["num_clients"] == len(partition["clients"]) == 3  # one client per site
    assert f"outputs: {results_file.parent.resolve()}" in out  # the whole path, unwrapped


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_users_mistakes_are_one_line_and_exit_2(workdirs: dict[str, tuple], name: str) -> None:
    cwd, code, _, err = workdirs[name]
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("fedflower: error: "), err
    assert EXPECTED[name] in lines[0]
    assert not list(cwd.rglob("metrics.jsonl"))  # nothing written before the check
