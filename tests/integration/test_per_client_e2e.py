"""Per-client evaluation end to end: a tiny run's per_client.jsonl, its block, baseline=local."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from fedflower.errors import ConfigError
from fedflower.experiment import run

pytestmark = pytest.mark.slow


def test_local_baseline_reports_every_sites_gain(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    results = run(tiny_cfg("baseline=local", "output.save_model=false"), tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "per_client.jsonl").read_text().splitlines()]
    local = [r for r in rows if r["model"] == "local"]
    federated = [r for r in rows if r["model"] == "global"]
    assert sorted(r["client"] for r in local) == ["0", "1", "2"]
    assert {r["round"] for r in local} == {2}  # the same budget: local_epochs x num_rounds
    assert [r["round"] for r in federated] == [1, 1, 1, 2, 2, 2]
    block = results["per_client"]
    assert block["round"] == 2 and block["global"]["clients"] == 3
    by_site = {s["client"]: s for s in block["sites"]}
    for r in local:
        site = by_site[r["client"]]
        assert site["local_accuracy"] == r["accuracy"]
        assert site["gain"] == pytest.approx(site["accuracy"] - r["accuracy"])
    assert block["gain"]["sites_gaining"] + block["gain"]["sites_losing"] <= 3
    assert (tmp_path / "per_client.png").is_file()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["per_client"]["gain"] == block["gain"]


def test_unknown_baseline_is_one_line(tiny_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="baseline"):
        run(tiny_cfg("baseline=central"), tmp_path)
