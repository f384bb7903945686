"""The ``fedflower`` command in a subprocess: bad input gives one line and a non-zero exit.

All commands are started at once (each is mostly TensorFlow's import or Hydra's composition),
then every test checks its own command's outcome. None of them may start training.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pytest

TIMEOUT = 180


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    cwd: Path


BAD: dict[str, list[str]] = {
    "unknown-strategy": ["strategy=nope"],
    "unknown-model": ["model=transformer"],
    "zero-clients": ["num_clients=0"],
    "fraction-above-one": ["strategy.fraction_train=1.5"],
    "more-clients-than-patients": ["num_clients=1000", "dataset=breast_cancer"],
    "unknown-key": ["foo=1"],
    "malformed-override": ["num_clients=[1,"],
    "natural-partition-without-groups": ["partition=natural", "dataset=breast_cancer"],
    "unknown-option-in-sweep": ["-m", "strategy=fedavg,nope"],
    "seed-not-a-number": ["seed=abc"],
    "negative-proximal-mu": ["strategy=fedprox", "strategy.proximal_mu=-1"],
    "zero-buffer": ["strategy=fedbuff", "strategy.buffer_size=0"],
    "zero-pareto-shape": ["latency=pareto", "latency.slowdown.shape=0"],
    "too-many-malicious": ["strategy=krum", "strategy.num_malicious_nodes=10"],
    "attack-fraction-above-one": ["attack=sign_flip", "attack.fraction=2"],
    "text-model-on-tabular-data": ["model=text"],
    "image-model-on-tabular-data": ["model=cnn", "num_clients=3"],
    "bad-wandb-mode": ["tracking=wandb", "tracking.mode=loud"],
    # the typed model, dataset and partition groups: Hydra refuses these while composing
    "unknown-model-key": ["model.hidden=[8]"],
    "model-key-of-wrong-type": ["model=cnn", "model.kernel_size=wide"],
    "unknown-dataset-key": ["dataset.patients=50"],
    "dataset-key-of-wrong-type": ["dataset.case_mix=high"],
    "unknown-partition-key": ["partition=dirichlet", "partition.beta=1"],
    "partition-key-of-wrong-type": ["partition=dirichlet", "partition.alpha=many"],
}
WRITES_NOTHING = (
    "seed-not-a-number",
    "negative-proximal-mu",
    "zero-buffer",
    "zero-pareto-shape",
    "too-many-malicious",
    "attack-fraction-above-one",
    "unknown-model-key",
    "model-key-of-wrong-type",
    "unknown-dataset-key",
    "dataset-key-of-wrong-type",
    "unknown-partition-key",
    "partition-key-of-wrong-type",
)
"""Cases that must fail before any output file (or the run directory) is written."""
EXPECTED: dict[str, str] = {
    "unknown-strategy": "unknown option 'nope' for strategy; choose one of: ",
    "unknown-model": "unknown option 'transformer' for model",
    "zero-clients": "num_clients must be an integer >= 1, got 0",
    "fraction-above-one": "strategy.fraction_train must be a number in [0, 1], got 1.5",
    "more-clients-than-patients": "num_clients=1000 but breast_cancer has only 455",
    "unknown-key": "'foo'",
    "malformed-override": "[1,",
    "natural-partition-without-groups": "cannot split breast_cancer",
    "unknown-option-in-sweep": "unknown option 'nope' for strategy",
    "seed-not-a-number": "seed must be an integer, got 'abc'",
    "negative-proximal-mu": "strategy.proximal_mu must be a number >= 0, got -1",
    "zero-buffer": "strategy.buffer_size must be an integer >= 1, got 0",
    "zero-pareto-shape": "shape",
    "too-many-malicious": "strategy.num_malicious_nodes must be an integer in [0, 9], got 10",
    "attack-fraction-above-one": "attack.fraction must be a number in [0, 1], got 2",
    "text-model-on-tabular-data": "reads sentences but dataset=fedflower.data.hospitals.load",
    "image-model-on-tabular-data": "model=cnn needs images (height, width[, channels]), got",
    "bad-wandb-mode": "tracking.mode must be one of offline, online, disabled, got 'loud'",
    "unknown-model-key": "unknown config key 'model.hidden'",
    "model-key-of-wrong-type": "model.kernel_size must be an integer, got 'wide'",
    "unknown-dataset-key": "unknown config key 'dataset.patients'",
    "dataset-key-of-wrong-type": "dataset.case_mix must be a number, got 'high'",
    "unknown-partition-key": "unknown config key 'partition.beta'",
    "partition-key-of-wrong-type": "partition.alpha must be a number, got 'many'",
}
OK: dict[str, list[str]] = {
    "help": ["--help"],
    "list-strategies": ["--list-strategies"],
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(TF_CPP_MIN_LOG_LEVEL="3", TQDM_DISABLE="1", HYDRA_FULL_ERROR="0")
    return env


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    procs = {}
    for name, args in {**BAD, **OK}.items():
        cwd = tmp_path_factory.mktemp(name)
        procs[name] = (
            cwd,
            subprocess.Popen(
                [sys.executable, "-m", "fedflower", *args],
                cwd=cwd,
                env=_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    results = {}
    try:
        for name, (cwd, proc) in procs.items():
            out, err = proc.communicate(timeout=TIMEOUT)
            results[name] = Outcome(proc.returncode, out, err, cwd)
        yield results
    finally:
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def options(group: str) -> list[str]:
    """The options of a config group, as the installed package ships them."""
    folder = files("fedflower.conf") / group
    return sorted(f.name[: -len(".yaml")] for f in folder.iterdir() if f.name.endswith(".yaml"))


def strategy_options() -> list[str]:
    return options("strategy")


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_one_line_and_nonzero_exit(outcomes: dict[str, Outcome], name: str) -> None:
    res = outcomes[name]
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("fedflower: error: ")
    assert EXPECTED[name] in lines[0]


def test_bad_input_starts_no_training(outcomes: dict[str, Outcome]) -> None:
    for name in BAD:
        res = outcomes[name]
        assert "round" not in res.stdout
        assert not list(res.cwd.rglob("metrics.jsonl")), name
        assert not list(res.cwd.rglob("model.keras")), name


@pytest.mark.parametrize("name", WRITES_NOTHING)
def test_bad_option_fails_before_any_output_file(outcomes: dict[str, Outcome], name: str) -> None:
    assert outcomes[name].returncode == 2
    assert not list(outcomes[name].cwd.rglob("*")), name


def test_unknown_strategy_lists_every_valid_option(outcomes: dict[str, Outcome]) -> None:
    line = outcomes["unknown-strategy"].stderr.strip()
    listed = line.split("choose one of: ", 1)[1].split(", ")
    assert listed == strategy_options()
    assert "fedavg" in listed


def test_unknown_key_suggests_the_plus_syntax(outcomes: dict[str, Outcome]) -> None:
    assert "+foo=" in outcomes["unknown-key"].stderr


def test_help_lists_groups_and_their_options(outcomes: dict[str, Outcome]) -> None:
    res = outcomes["help"]
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "== Config groups" in text
    conf = files("fedflower.conf")
    groups = sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name != "hydra")
    section = text.split("== Config groups", 1)[1].split("== Config ==", 1)[0]
    lines = {line.split(":", 1)[0]: line for line in section.splitlines() if ":" in line}
    for group in groups:
        if not options(group):
            continue
        assert group in lines, f"group {group} missing from --help"
        listed = lines[group].split(":", 1)[1].strip().split(", ")
        assert listed == options(group)
    assert "num_clients: 10" in text  # the composed default config follows
    assert "fedflower -m seed=0,1,2" in text


def test_list_strategies_prints_fedavg(outcomes: dict[str, Outcome]) -> None:
    res = outcomes["list-strategies"]
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    first = {line.split()[0]: line for line in res.stdout.splitlines() if line and line[0] != " "}
    assert "fedavg" in first
    assert "fedflower.strategies.fedavg:FedAvg" in first["fedavg"]
    assert "arXiv:1602.05629" in res.stdout
    assert set(first) == set(strategy_options())


def test_help_shows_the_users_own_data_and_export(outcomes: dict[str, Outcome]) -> None:
    text = outcomes["help"].stdout
    assert "fedflower dataset=csv dataset.path=" in text
    assert "fedflower export " in text
