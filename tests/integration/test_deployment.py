"""Real deployments on 127.0.0.1: SuperLink and SuperNode processes, TLS, node authentication.

Every test starts its processes through :class:`LocalFederation`, whose context manager stops
them (children included) also when the test fails; every wait is bounded. The refusal test
is cheap and runs everywhere; the runs that train are marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import psutil
import pytest
import tomli
from helpers import run_rows
from omegaconf import DictConfig

from fedflower.deploy.demo import SuperLinkNotStarted, simulate, write_site_files
from fedflower.deploy.federation import LocalFederation, Managed, RunHandle
from fedflower.deploy.local_data import read_csv
from fedflower.deploy.processes import alive, family, tagged
from fedflower.experiment import run
from fedflower.export import export

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the federation runs on Linux hosts"
)

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "dataset.patients_per_hospital=300",
    "dataset.test_patients_per_hospital=100",
    "progress=false",
    "output.plots=false",
]
DEPLOYED = ["progress=false", "output.plots=false"]  # the default 1000 patients per hospital


def wait_exit(process: Managed, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.alive():
        time.sleep(0.5)
    return process.process.poll()


def our_processes(fed: LocalFederation) -> list[psutil.Process]:
    """Every process of the federation now: started ones, their children, tagged ones."""
    return family([m.handle for m in fed.processes if m.handle], fed.tag)


def assert_all_stopped(fed: LocalFederation, seen: list[psutil.Process]) -> None:
    assert not fed.processes
    assert not [p for p in seen if alive(p)]
    assert not tagged(fed.tag)


def mentioning(text: str) -> list[psutil.Process]:
    """Running processes whose command line mentions ``text``."""
    found = psutil.process_iter(["cmdline"])
    return [p for p in found if alive(p) and text in " ".join(p.info["cmdline"] or [])]


@pytest.mark.slow
def test_unknown_and_unauthenticated_supernodes_are_refused(tmp_path: Path) -> None:
    with LocalFederation(tmp_path / "fed", [], startup_timeout=60) as fed:
        unknown = fed.start_unknown_supernode({"partition-id": 0, "num-partitions": 1})
        anonymous = fed.start_supernode({"partition-id": 0, "num-partitions": 1}, None, 50)
        fed.supernodes.append(anonymous)
        codes = [wait_exit(unknown, 90), wait_exit(anonymous, 90)]
        assert codes[0] not in (None, 0) and codes[1] not in (None, 0)
        assert "Failed to activate SuperNode" in unknown.log_text()
        assert "All SuperNodes must be registered" in anonymous.log_text()
        assert fed.nodes() == []  # never registered, never online
        pids = our_processes(fed)
    assert_all_stopped(fed, pids)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
def test_secure_federation_trains_on_site_files_and_survives_a_bad_one(tmp_path: Path) -> None:
    overrides = ["num_clients=3", "num_rounds=2", "strategy.fraction_evaluate=0", *DEPLOYED]
    csv1, _csv2, csv3 = write_site_files(overrides, 3, tmp_path / "data", "csv")
    npz2 = write_site_files(overrides, 3, tmp_path / "data", "npz")[1]
    x3, _ = read_csv(csv3)
    bad = tmp_path / "data" / "site-3-bad.csv"  # the label column is missing
    bad.write_text(
        "\n".join([",".join(f"f{i}" for i in range(20))] + [",".join(map(str, r)) for r in x3])
    )
    nodes = [{"data-path": str(csv1)}, {"data-path": str(npz2)}, {"data-path": str(bad)}]
    with LocalFederation(tmp_path / "fed", nodes) as fed:
        assert len(fed.online_nodes()) == 3
        results, output = fed.run(overrides, output_dir=tmp_path / "out", timeout=600)
        pids = our_processes(fed)
    assert_all_stopped(fed, pids)

    # the bad node's error reached the server as one line, the run finished with the others
    failures = [line for line in output.splitlines() if "failed" in line and "site-3-bad" in line]
    assert failures and "no label column 'label'" in failures[0]
    assert results["totals"]["rounds"] == 2
    assert results["final"]["accuracy"] >= 0.75
    assert results["final"]["accuracy"] > results["initial"]["accuracy"] + 0.1
    rows = run_rows(tmp_path / "out")
    assert [r["round"] for r in rows] == [1, 2] and all(r["bytes_up"] > 0 for r in rows)
    # the saved global model scores what the server reported
    cfg_dataset = results["config"]["dataset"]
    from hydra.utils import instantiate

    source = instantiate(cfg_dataset)
    model = keras.models.load_model(tmp_path / "out" / "model.keras")
    _, accuracy = model.evaluate(source.x_test, source.y_test, verbose=0)
    assert accuracy == pytest.approx(results["final"]["accuracy"], abs=1e-6)


@pytest.mark.slow
def test_fedbuff_survives_a_killed_node_and_gives_work_to_a_late_one(tmp_path: Path) -> None:
    versions = 30  # a version of 2 updates from warm nodes takes about 1 s: room for the late node
    overrides = [
        "num_clients=4",
        f"num_rounds={versions}",
        "strategy=fedbuff",
        "strategy.concurrency=4",
        "strategy.buffer_size=2",
        "strategy.task_timeout=120",
        *DEPLOYED,
    ]
    files = write_site_files(overrides, 4, tmp_path / "data", "csv")
    nodes = [{"data-path": str(p)} for p in files[:3]]
    with LocalFederation(tmp_path / "fed", nodes) as fed:
        handle = fed.submit(overrides, output_dir=tmp_path / "out")
        wait_rounds(handle, 1)  # the first server update
        fed.kill_node(1)  # a crash mid-run: the node and its ClientApp die at once
        late = fed.add_node({"data-path": str(files[3])})
        deadline = time.monotonic() + 300
        while not fed.is_online(fed.node_ids[3]) and time.monotonic() < deadline:
            assert late.alive(), late.log_text()[-3000:]
            time.sleep(0.5)
        assert fed.is_online(fed.node_ids[3]), late.log_text()[-3000:]
        online_at = len(handle.metrics())  # server versions made before the late node was online
        assert online_at < versions and handle.process.poll() is None, "no version left: raise it"
        results, _output = handle.wait(timeout=600)
        late_log = late.log_text()
        pids = our_processes(fed)
    assert_all_stopped(fed, pids)
    assert results["totals"]["rounds"] == versions  # server versions: the run did not stall
    # the late node got work (online with versions left: the strategy samples it)
    assert "Receiving: train message" in late_log, (online_at, late_log[-3000:])
    # the killed node's task in flight was never folded: given up (its error reply or
    # task_timeout) or, when the other nodes reached the last version first, left unfinished
    assert results["async"]["failed"] + results["async"]["unfinished"] >= 1, results["async"]
    assert results["final"]["accuracy"] > results["initial"]["accuracy"] + 0.05


@pytest.mark.slow
def test_flwr_run_in_local_simulation_matches_fedflower(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    overrides = ["num_rounds=2", *SMALL]
    flwr_table = tomli.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]
    try:
        results = simulate(REPO, overrides, num_supernodes=3, workdir=tmp_path, timeout=600)
    except SuperLinkNotStarted as exc:  # a loaded machine; a failed run is not skipped
        pytest.skip(f"Flower's local SuperLink did not start: {exc}")
    # flwr run migrates and comments out [tool.flwr.federations]; ours has none to rewrite
    assert tomli.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"] == flwr_table
    assert "federations" not in flwr_table
    expected = run(tiny_cfg(*overrides[1:]), tmp_path / "sim")
    assert results["totals"]["rounds"] == 2
    # Flower's simulation runs the clients in Ray worker processes, like `simulation=ray`
    # (whose numbers it reproduces exactly); the in-process local engine's differ in round-off
    assert results["final"]["accuracy"] == pytest.approx(expected["final"]["accuracy"], abs=0.03)
    assert results["final"]["accuracy"] > results["initial"]["accuracy"] + 0.1
    assert not mentioning(str(tmp_path))


@pytest.mark.slow
def test_tflite_export_matches_keras_on_the_test_set(
    tiny_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    results = run(tiny_cfg("output.plots=false"), tmp_path / "run")
    model_path = tmp_path / "run" / "model.keras"
    report = export(model_path)
    assert Path(report.tflite_path).is_file() and report.tflite_file_bytes > 0
    assert report.examples == 300
    assert report.runtime == "ai_edge_litert"  # the on-device LiteRT interpreter (extra "edge")
    assert report.max_abs_diff is not None and report.max_abs_diff <= 1e-5
    assert report.tflite_accuracy == pytest.approx(results["final"]["accuracy"], abs=1e-6)
    assert report.prediction_agreement == 1.0
    assert report.bytes_per_round_per_client is not None and report.bytes_per_round_per_client > 0
    quantized = export(model_path, tmp_path / "q.tflite", quantize="dynamic")
    assert quantized.tflite_file_bytes < report.tflite_file_bytes
    assert quantized.within_tolerance and (quantized.prediction_agreement or 0) >= 0.97
    # the command line, through the main `fedflower` console script
    res = subprocess.run(
        [
            str(Path(sys.executable).parent / "fedflower"),
            "export",
            str(model_path),
            "--to",
            "tflite",
            "--out",
            str(tmp_path / "cli.tflite"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    report_json = json.loads(res.stdout)
    assert report_json["within_tolerance"] and report_json["max_abs_diff"] <= 1e-5
    assert (tmp_path / "cli.tflite").read_bytes()[4:8] == b"TFL3"  # the flatbuffer's file id


def wait_rounds(handle: RunHandle, rounds: int, timeout: float = 300) -> None:
    """Wait until ``metrics.jsonl`` has ``rounds`` rows (the run must still be going)."""
    deadline = time.monotonic() + timeout
    while len(handle.metrics()) < rounds and time.monotonic() < deadline:
        assert handle.process.poll() is None, handle.output[-2000:]
        time.sleep(0.5)
    assert len(handle.metrics()) >= rounds, handle.output[-2000:]


def lost(row: dict[str, Any], kind: str = "train") -> list[int]:
    """The nodes a round lost: missing, late and failed (each node at most once)."""
    return [n for what in ("missing", "late", "failed") for n in row.get(f"{kind}_{what}", [])]


@pytest.mark.slow
def test_fedavg_finishes_every_round_after_a_node_is_killed_and_rejoins(tmp_path: Path) -> None:
    rounds = 30  # a round of 2 warm nodes takes about 1 s: room for the restart (~10 s)
    overrides = [
        "num_clients=3",
        f"num_rounds={rounds}",
        "+strategy.round_timeout=120",
        "strategy.min_train_nodes=2",
        "strategy.fraction_evaluate=0",
        *SMALL,
    ]
    files = write_site_files(overrides, 3, tmp_path / "data", "csv")
    with LocalFederation(tmp_path / "fed", [{"data-path": str(p)} for p in files]) as fed:
        handle = fed.submit(overrides, output_dir=tmp_path / "out")
        wait_rounds(handle, 1)
        fed.kill_node(1)  # SIGKILL: the node and its ClientApp die at once
        wait_rounds(handle, 2)
        seen = len(fed.supernodes[1].log_text())
        fed.restart_node(1)  # same node key: the same node id; returns once it is online
        assert fed.is_online(fed.node_ids[1])
        back = len(handle.metrics())  # rounds finished before the node was back
        assert back < rounds and handle.process.poll() is None, "no round left: raise num_rounds"
        results, _output = handle.wait(timeout=600)
        rejoined_log = fed.supernodes[1].log_text()[seen:]
        rows = handle.metrics()
        pids = our_processes(fed)
    assert_all_stopped(fed, pids)
    assert results["totals"]["rounds"] == rounds  # the run did not stall on the dead node
    assert [r["round"] for r in rows] == list(range(1, rounds + 1))
    assert lost(rows[0]) == [] and rows[0]["train_clients"] == 3, rows[0]
    # the killed node is lost in round 2, once (as missing or failed, not both) ...
    killed = fed.node_ids[1]
    assert lost(rows[1]).count(killed) == 1, rows[1]
    assert all(len(set(lost(r))) == len(lost(r)) for r in rows), rows
    # ... a survivor only in that round, if ever (the round waits about a minute for the
    # SuperLink to give up the killed node; a survivor lost in it is tolerated, and shown by
    # the assertion's message), and from round 3 on no round is lost or skipped
    others = [(r["round"], n) for r in rows for n in lost(r) if n != killed]
    assert all(rnd == 2 for rnd, _ in others), others
    assert not any(r.get("skipped") for r in rows[2:]), rows
    assert all(set(lost(r)) <= {killed} for r in rows[2:]), rows
    # ... and once it is back, rounds train on all three nodes again, the last one included
    assert any(r["train_clients"] == 3 and lost(r) == [] for r in rows[back:]), rows[back:]
    assert lost(rows[-1]) == [] and rows[-1]["train_clients"] == 3, rows[-1]
    assert "Receiving: train message" in rejoined_log, rejoined_log[-3000:]


def task_pids(fed: LocalFederation) -> list[list[int]]:
    """Per SuperNode, the process id of each ClientApp task it ran (its log's task lines)."""
    from fedflower.deploy.warm import TASK_LINE

    return [
        [json.loads(line.split(" ", 1)[1])["pid"] for line in lines if line.startswith(TASK_LINE)]
        for lines in (node.log_text().splitlines() for node in fed.supernodes)
    ]


@pytest.mark.slow
def test_warm_supernodes_give_the_metrics_of_a_new_process_per_task(tmp_path: Path) -> None:
    overrides = ["num_clients=3", "num_rounds=2", *SMALL]  # train and evaluate tasks
    files = write_site_files(overrides, 3, tmp_path / "data", "csv")
    nodes = [{"data-path": str(p)} for p in files]
    metrics = ("loss", "accuracy", "fed_loss", "fed_accuracy", "train_loss")
    rows = {}
    with LocalFederation(tmp_path / "warm", nodes) as fed:
        for name in ("warm", "warm again"):  # a second run in the same task workers
            handle = fed.submit(overrides, output_dir=tmp_path / name)
            handle.wait(timeout=600)
            rows[name] = [{k: r[k] for k in metrics} for r in handle.metrics()]
        pids = task_pids(fed)
    with LocalFederation(tmp_path / "cold", nodes, warm_tasks=False) as fed:
        handle = fed.submit(overrides, output_dir=tmp_path / "cold")
        handle.wait(timeout=900)
        rows["cold"] = [{k: r[k] for k in metrics} for r in handle.metrics()]
        assert task_pids(fed) == [[], [], []]  # Flower's own flwr-clientapp processes
    assert len(rows["cold"]) == 2
    for name in ("warm", "warm again"):  # again: nothing of the first run was reused
        for row, cold in zip(rows[name], rows["cold"], strict=True):
            # same seed: the same model and evaluations in every round, to float32 precision
            # (Keras trains and reports losses in float32; the server sums in the order
            # replies arrive); a model or data reused from another run differs far more
            assert row == pytest.approx(cold, rel=1e-6)
    # each node ran its 2 runs x 2 rounds x (train, evaluate) tasks in one worker process
    assert [len(p) for p in pids] == [8, 8, 8] and all(len(set(p)) == 1 for p in pids)


SECURE = [
    "secagg=secaggplus",
    "num_clients=3",
    "num_rounds=3",
    "+strategy.round_timeout=120",
    "strategy.min_train_nodes=2",
    "strategy.fraction_evaluate=0",
    *SMALL,
]


def secure_run_losing_a_node(
    tmp_path: Path, overrides: list[str]
) -> tuple[dict[str, Any], str, list[dict[str, Any]], float]:
    """A SecAgg+ run whose SuperNode 1 is killed after round 1: results, output, rows, and
    the seconds from the kill to the run's end."""
    files = write_site_files(overrides, 3, tmp_path / "data", "csv")
    with LocalFederation(tmp_path / "fed", [{"data-path": str(p)} for p in files]) as fed:
        handle = fed.submit(overrides, output_dir=tmp_path / "out")
        wait_rounds(handle, 1, timeout=600)
        fed.kill_node(1)  # SIGKILL in round 2's protocol stages: no reply from it again
        killed_at, killed = time.monotonic(), fed.node_ids[1]
        results, output = handle.wait(timeout=900)
        took = time.monotonic() - killed_at
        rows = handle.metrics()
        pids = our_processes(fed)
    assert_all_stopped(fed, pids)
    assert [r["round"] for r in rows] == [1, 2, 3], output[-3000:]
    # the killed node is lost in round 2 once, not once a stage; a survivor lost in that
    # round too (as in the FedAvg test above) is tolerated here and shown by the message
    assert lost(rows[0]) == [] and lost(rows[1]).count(killed) == 1, (rows, output[-6000:])
    assert all(set(lost(r)) <= set(lost(rows[1])) for r in rows)
    assert "Traceback" not in output
    return results, output, rows, took


@pytest.mark.slow
def test_secaggplus_below_its_threshold_sums_the_survivors_after_a_node_is_killed(
    tmp_path: Path,
) -> None:
    # 3 sampled, reconstruction_threshold 0.67: 2 of each node's 3 key shares unmask the sum
    results, output, rows, took = secure_run_losing_a_node(tmp_path, SECURE)
    assert results["totals"]["rounds"] == 3  # every round, none skipped
    assert not any(r.get("skipped") for r in rows)
    assert "round 2: SecAgg+ summed the updates of 2 of 3 sampled nodes" in output
    assert results["deadline"]["skipped_rounds"] == 0
    assert results["final"]["accuracy"] > results["initial"]["accuracy"] + 0.05
    assert took < 120 + 2 * 120  # the lost node's deadline, then two rounds of survivors


@pytest.mark.slow
def test_secaggplus_above_its_threshold_skips_the_round_and_goes_on(tmp_path: Path) -> None:
    # reconstruction_threshold 1.0: all 3 shares of every node's keys needed, 2 survive
    overrides = [*SECURE, "secagg.reconstruction_threshold=1.0"]
    results, output, rows, took = secure_run_losing_a_node(tmp_path, overrides)
    assert [bool(r.get("skipped")) for r in rows] == [False, True, False]
    skipped = [line for line in output.splitlines() if "skipped (model unchanged)" in line]
    assert len(skipped) == 1 and "train round 2 skipped" in skipped[0], output[-3000:]
    assert "SecAgg+ halted: 2 of 3 nodes answered" in skipped[0]
    assert results["deadline"]["skipped_rounds"] == 1
    # round 3 samples the 2 connected nodes (threshold 1.0 of 2 shares): the run goes on
    assert rows[2]["accuracy"] != rows[1]["accuracy"]
    assert took < 120 + 2 * 120
