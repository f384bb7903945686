"""A cross-device federation: 10,000 generated hospitals, a sample trained per round.

``experiment=scale`` with ``num_clients=10000`` and 50 clients a round. Measured on this machine:
about 1 s per round; the bytes sent per round are those of exactly 50 train messages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from fedflower.experiment import run
from fedflower.outputs import RunDir

CLIENTS, SAMPLED, ROUNDS = 10_000, 50, 2


@pytest.mark.slow
def test_ten_thousand_clients_with_sampling(tmp_path: Path) -> None:
    overrides = [
        "experiment=scale",
        f"num_clients={CLIENTS}",
        f"num_rounds={ROUNDS}",
        "strategy.fraction_train=1e-9",  # then min_train_nodes clients train each round
        f"strategy.min_train_nodes={SAMPLED}",
        "progress=false",
        "output.plots=false",
    ]
    with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    results = run(cfg, output_dir=tmp_path)
    assert results["totals"]["rounds"] == ROUNDS
    rows = RunDir(tmp_path).metrics()
    model_bytes = results["communication"]["model_bytes"]
    for row in rows:  # SAMPLED train messages down and up, no federated evaluation
        assert SAMPLED * model_bytes < row["bytes_down"] < SAMPLED * (model_bytes + 4096)
        assert SAMPLED * model_bytes < row["bytes_up"] < SAMPLED * (model_bytes + 4096)
        assert row["fed_accuracy"] is None
        assert row["train_clients"] == SAMPLED
    # the naive estimate counts the sampled clients, not the population
    assert results["communication"]["clients_per_round"] == SAMPLED
    assert results["communication"]["naive_estimate_bytes"] == SAMPLED * model_bytes * ROUNDS
    assert results["final"]["accuracy"] > results["initial"]["accuracy"] + 0.1
    summary = json.loads((tmp_path / "partition.json").read_text())
    assert summary["clients"] == CLIENTS
