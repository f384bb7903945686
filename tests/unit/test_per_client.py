"""fedflower.server.per_client: rows per client and model, their spread, the final table."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from fedflower import keys
from fedflower.engine.local import LocalGrid
from fedflower.engine.wrapper import MessageFactory
from fedflower.outputs.per_client import (
    PER_CLIENT_FILE,
    PerClientLog,
    model_rows,
    per_client_lines,
    spread,
)
from fedflower.server.per_client import PerClientGrid, engine_namer
from fedflower.sites import site_name


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / PER_CLIENT_FILE).read_text().splitlines()]


def test_a_reply_makes_one_row_per_model_it_reports() -> None:
    metrics = {
        keys.EVAL_LOSS: 0.5,
        keys.EVAL_ACCURACY: 0.75,
        "eval_auc": 0.8,
        "personal_eval_loss": 0.25,
        "personal_eval_accuracy": 0.9,
        keys.NUM_EXAMPLES: 40,
    }
    rows = model_rows(3, "7", metrics)
    assert rows == [
        {"round": 3, "client": "7", "model": "global", "num_examples": 40, "loss": 0.5,
         "accuracy": 0.75, "auc": 0.8},
        {"round": 3, "client": "7", "model": "personal", "num_examples": 40, "loss": 0.25,
         "accuracy": 0.9},
    ]  # fmt: skip


def test_spread_on_hand_computed_numbers() -> None:
    stats = spread([0.5, 0.7, 0.9, 1.0])
    assert stats["mean"] == pytest.approx(0.775)
    assert stats["worst"] == 0.5
    assert stats["p10"] == pytest.approx(0.56)  # 0.5 + 0.3 * (0.7 - 0.5): linear, rank 0.3
    assert stats["std"] == pytest.approx(np.sqrt(0.036875))
    assert stats["clients"] == 4


def evaluation(acc: float, n: int = 10, personal: float | None = None) -> dict[str, float]:
    metrics = {keys.EVAL_LOSS: 1 - acc, keys.EVAL_ACCURACY: acc, keys.NUM_EXAMPLES: n}
    if personal is not None:
        metrics.update(personal_eval_loss=1 - personal, personal_eval_accuracy=personal)
    return metrics


def test_log_streams_rows_and_keeps_only_the_last_round(tmp_path: Path) -> None:
    log = PerClientLog(tmp_path, plots=True)
    log.add(1, "0", evaluation(0.5))
    log.add(1, "1", evaluation(0.7))
    assert len(read_rows(tmp_path)) == 2  # written as they arrive
    assert log.round_report()["client_accuracy_worst"] == 0.5
    log.add(2, "0", evaluation(0.6, personal=0.9))
    log.add(2, "1", evaluation(0.8, personal=0.7))
    report = log.round_report()
    assert report["client_accuracy_mean"] == pytest.approx(0.7)
    assert report["personal_client_accuracy_worst"] == pytest.approx(0.7)
    assert {r["round"] for r in log.final} == {2}
    log.add_local(2, "0", evaluation(0.95))
    log.add_local(2, "1", evaluation(0.5))
    assert read_rows(tmp_path)[-1]["model"] == "local"
    block = log.run_report()["per_client"]
    assert block["round"] == 2
    assert [(s["client"], s["gain"]) for s in block["sites"]] == [
        ("0", pytest.approx(0.9 - 0.95)),
        ("1", pytest.approx(0.7 - 0.5)),
    ]
    assert block["gain"]["sites_gaining"] == 1 and block["gain"]["sites_losing"] == 1
    assert block["global"]["worst"] == pytest.approx(0.6)
    assert (tmp_path / "per_client.png").stat().st_size > 0
    assert len(read_rows(tmp_path)) == 8
    assert any("1 of 2 sites gain" in value for _, value in per_client_lines(block))


def test_resume_drops_rows_written_after_the_checkpoint(tmp_path: Path) -> None:
    log = PerClientLog(tmp_path)
    log.add(1, "0", evaluation(0.5))
    log.round_report()
    state = json.loads(json.dumps(log.state_dict()))  # a checkpoint holds plain data
    log.add(2, "0", evaluation(0.6))
    log.round_report()
    resumed = PerClientLog(tmp_path, resume=True)
    resumed.load_state_dict(state)
    resumed.add(2, "0", evaluation(0.7))
    assert [(r["round"], r["accuracy"]) for r in read_rows(tmp_path)] == [(1, 0.5), (2, 0.7)]


def evaluating_app() -> ClientApp:
    """Evaluates to accuracy = partition id / 10; names itself when asked."""
    app = ClientApp()

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        pid = int(context.node_config.get(keys.PARTITION_ID, 0))
        content = RecordDict({keys.METRICS: MetricRecord(evaluation(pid / 10))})
        if msg.content[keys.CONFIG].get(keys.REPORT_CLIENT):  # type: ignore[union-attr]
            name = site_name(context.node_config, context.node_id)
            content[keys.CLIENT_INFO] = ConfigRecord({keys.CLIENT_NAME: f"site-{name}"})
        return Message(content, reply_to=msg)

    return app


class Opaque(MessageFactory, Grid):
    """A grid that cannot name its nodes (as a SuperLink's)."""

    def __init__(self, grid: LocalGrid) -> None:
        self._grid = grid

    def set_run(self, run):  # type: ignore[no-untyped-def]
        self._grid.set_run(run)

    @property
    def run(self):  # type: ignore[no-untyped-def]
        return self._grid.run

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        return self._grid.send_and_receive(messages, timeout=timeout)


def evaluate_messages(nodes: Iterable[int], rnd: int) -> list[Message]:
    config = ConfigRecord({keys.SERVER_ROUND: rnd})
    return [
        Message(RecordDict({keys.CONFIG: ConfigRecord(dict(config))}), dst_node_id=n,
                message_type=MessageType.EVALUATE)
        for n in nodes
    ]  # fmt: skip


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize("opaque", [False, True])
def test_grid_names_sampled_clients_of_a_large_federation(tmp_path: Path, opaque: bool) -> None:
    local = LocalGrid(evaluating_app(), 100_000)
    inner: Grid = Opaque(local) if opaque else local
    grid = PerClientGrid(inner, PerClientLog(tmp_path), engine_namer(inner))
    grid.send_and_receive(evaluate_messages([3, 50_001], rnd=4))
    ids = list(grid.push_messages(evaluate_messages([6], rnd=5)))
    grid.pull_messages(ids)
    prefix = "site-" if opaque else ""
    assert [(r["round"], r["client"], r["accuracy"]) for r in read_rows(tmp_path)] == [
        (4, f"{prefix}2", 0.2),
        (4, f"{prefix}50000", 5000.0),
        (5, f"{prefix}5", 0.5),
    ]
    assert len(grid.log._round) == 3  # only the evaluated clients, never the federation


def test_site_name_prefers_the_site_then_the_data_file() -> None:
    assert site_name({keys.SITE_NAME: "st-marys", keys.DATA_PATH: "/d/site-3.csv"}, 9) == "st-marys"
    assert site_name({keys.DATA_PATH: "/d/site-3.csv", keys.PARTITION_ID: 2}, 9) == "site-3"
    assert site_name({keys.PARTITION_ID: 2}, 9) == "2"
    assert site_name({}, 9) == "9"


def test_rows_carry_the_sites_names_when_the_log_knows_them(tmp_path: Path) -> None:
    log = PerClientLog(tmp_path, plots=False, names={"0": "Rural clinic", "1": "St. Mary's"})
    log.add(1, "0", evaluation(0.5))
    log.add(1, "1", evaluation(0.7))
    log.round_report()
    log.add_local(1, "1", evaluation(0.6))
    assert [r["client"] for r in read_rows(tmp_path)] == [
        "Rural clinic",
        "St. Mary's",
        "St. Mary's",
    ]
    sites = log.run_report()["per_client"]["sites"]
    assert [s["client"] for s in sites] == ["Rural clinic", "St. Mary's"]
    assert sites[1]["gain"] == pytest.approx(0.7 - 0.6)
