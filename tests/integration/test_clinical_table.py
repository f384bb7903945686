"""An ordinary clinical CSV (blank cells, a category, free text, yes/no labels, four hospitals)
trains with one command, and its model.keras predicts the raw test file to the run's accuracy;
the deployed ServerApp/ClientApp train on it alike."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import clinical, run_app_in_process
from omegaconf import DictConfig

pytestmark = pytest.mark.slow

ROUNDS = 3


def overrides(folder: Path) -> list[str]:
    return [
        "dataset=csv",
        f"dataset.path={folder / 'clinical.csv'}",
        f"dataset.test_path={folder / 'clinical_test.csv'}",
        "dataset.label=readmitted",
        "dataset.client_column=hospital",
        "dataset.missing=impute",
        "num_clients=4",
        f"num_rounds={ROUNDS}",
        "output.plots=false",
        "progress=false",
    ]


def fedflower(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedflower", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_clinical_csv_trains_in_one_command_and_predicts_raw_rows(tmp_path: Path) -> None:
    clinical(tmp_path)
    out = tmp_path / "run"
    done = fedflower(*overrides(tmp_path), f"hydra.run.dir={out}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (out / "cli.log").read_text()
    assert "categorical ['smoker']; text (left out) ['notes']" in log
    assert "preprocessing fitted from 4 nodes' statistics (480 rows, no row sent" in log
    results = json.loads((out / "results.json").read_text())
    assert results["statistics"]["bytes_up"] > 0 and results["statistics"]["noise"] == "none"
    assert "table statistics (4 nodes)" in done.stdout and "no noise" in done.stdout
    accuracy = results["final"]["accuracy"]
    assert accuracy > 0.65  # 87 of the 150 test rows are "yes": 0.58
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    raw = tmp_path / "clinical_test.csv"
    done = fedflower("predict", str(out), str(raw), "--out", "preds.csv", cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"accuracy {accuracy:.4f}" in done.stdout
    header = (elsewhere / "preds.csv").read_text().splitlines()[0]
    assert header == "row,prediction,p_no,p_yes"


def test_predict_refuses_a_damaged_model_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"not a zip archive")
    clinical(tmp_path)
    done = fedflower("predict", str(bad), str(tmp_path / "clinical.csv"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("is not a Keras model file (.keras); give model.keras")
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_deployed_apps_train_on_the_table_as_the_simulation_does(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    from fedflower.experiment import run

    clinical(tmp_path)
    simulated = run(make_cfg(overrides(tmp_path)), tmp_path / "sim")
    nodes = [{"partition-id": i, "num-partitions": 4} for i in range(4)]
    deployed = run_app_in_process(overrides(tmp_path), tmp_path / "dep", nodes)
    assert deployed["final"]["accuracy"] == pytest.approx(simulated["final"]["accuracy"], abs=1e-6)
    assert (tmp_path / "dep" / "model.keras").is_file()


def test_a_numeric_table_model_exports_to_tflite_from_any_folder(tmp_path: Path) -> None:
    clinical(tmp_path)
    out = tmp_path / "run"
    relative = [
        a.replace(str(tmp_path) + "/", "") for a in overrides(tmp_path)
    ]  # data named relative to the run's folder
    args = [*relative, "dataset.exclude=[smoker,notes]", f"hydra.run.dir={out}"]
    done = fedflower(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    accuracy = json.loads((out / "results.json").read_text())["final"]["accuracy"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = fedflower("export", str(out / "model.keras"), "--json", cwd=elsewhere)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["examples"] == 150  # the raw test rows, blank cells included
    assert report["tflite_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert report["max_abs_diff"] <= 1e-5


def test_a_categorical_table_model_exports_numeric_rows_and_its_vocabulary(
    tmp_path: Path,
) -> None:
    clinical(tmp_path)
    out = tmp_path / "run"
    done = fedflower(*overrides(tmp_path), f"hydra.run.dir={out}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    accuracy = json.loads((out / "results.json").read_text())["final"]["accuracy"]
    done = fedflower("export", str(out / "model.keras"), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["examples"] == 150
    assert report["keras_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert report["tflite_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert report["max_abs_diff"] <= 1e-5
    vocab = json.loads((out / "model.vocab.json").read_text())
    assert vocab["categorical"] == {"smoker": ["current", "former", "never"]}
    assert vocab["columns"] == ["age", "bmi", "systolic_bp", "glucose", "smoker"]
    done = fedflower("export", str(out / "model.keras"), cwd=tmp_path)
    assert "LiteRT has no string lookup" in done.stdout and "model.vocab.json" in done.stdout
    labelled = fedflower(
        "export", str(out), "--data", str(tmp_path / "clinical_test.csv"), "--json", cwd=tmp_path
    )
    assert json.loads(labelled.stdout)["tflite_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_supernodes_reading_their_own_site_files_fit_the_statistics_by_message(
    tmp_path: Path,
) -> None:
    """Each node reads its own raw table (data-path), as a hospital would hold it."""
    from fedflower.deploy.demo import write_site_files

    clinical(tmp_path)
    sites = write_site_files(overrides(tmp_path), 4, tmp_path / "sites")
    header = sites[0].read_text().splitlines()[0]
    assert header == "age,bmi,systolic_bp,glucose,smoker,readmitted"
    assert ",," in "".join(p.read_text() for p in sites)  # the blank cells travel raw
    nodes = [{"data-path": str(p)} for p in sites]
    results = run_app_in_process(overrides(tmp_path), tmp_path / "dep", nodes)
    stats = results["statistics"]
    assert stats["nodes"] == 4 and stats["bytes_up"] > 0
    train_rows = sum(len(p.read_text().splitlines()) - 1 for p in sites)
    assert stats["rows"] == train_rows - sum(
        round(0.2 * (len(p.read_text().splitlines()) - 1)) for p in sites
    )
    assert results["final"]["accuracy"] > 0.65


def test_the_notes_column_trains_model_text_and_predicts_raw_rows(tmp_path: Path) -> None:
    clinical(tmp_path)
    out = tmp_path / "run"
    text = ["dataset.text_column=notes", "model=text", "num_rounds=5"]
    done = fedflower(*overrides(tmp_path), *text, f"hydra.run.dir={out}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    accuracy = json.loads((out / "results.json").read_text())["final"]["accuracy"]
    assert accuracy > 0.7  # 4 notes in 5 match the outcome; 87 of the 150 test rows are "yes"
    raw = tmp_path / "clinical_test.csv"
    done = fedflower("predict", str(out), str(raw), "--out", "p.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"accuracy {accuracy:.4f}" in done.stdout
