"""On-device export: the final global model as a LiteRT (TFLite) flatbuffer, checked against Keras.

``fedflower export outputs/.../model.keras --to tflite`` writes ``model.tflite`` next to the
model, runs both on the run's central test set (rebuilt from the ``results.json`` beside the
model, or a CSV/NPZ file given with ``--data``) and reports the largest difference between
the two models' outputs, both accuracies, the file sizes and the bytes a client exchanges per
round (from the run's ``metrics.jsonl``). A difference above the tolerance is an error
(exit code 1), so the check can gate a release to devices.

The flatbuffer is made by TensorFlow's converter (``tf.lite.TFLiteConverter``) and runs in
the LiteRT interpreter (``ai_edge_litert``, the on-device runtime) when that package is
installed, else in TensorFlow's bundled ``tf.lite.Interpreter``. ``--quantize dynamic``
stores the weights as int8 (post-training dynamic-range quantization, about 4x smaller;
Jacob et al. 2018, arXiv:1712.05877); its outputs differ more, so the default tolerance
then is looser.

A model trained on a table (:mod:`fedflower.model_inputs`) is exported taking one float row:
its numeric columns (NaN where empty), then each categorical column as the index of its value
in the vocabulary. LiteRT has no string lookup among its built-in operators, so that lookup
stays on the device: ``<model>.vocab.json`` beside the flatbuffer lists each categorical
column's values in index order (and the columns and class names), and the report says so.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedflower.errors import ConfigError, DataError, FedflowerError
from fedflower.outputs.rundir import RunDir

log = logging.getLogger(__name__)

FORMATS = ("tflite",)
QUANTIZATIONS = ("none", "dynamic")
TOLERANCE = {"none": 1e-5, "dynamic": 5e-2}
"""Default largest allowed absolute difference between Keras and TFLite outputs."""


@dataclass
class ExportReport:
    """What an export wrote and how the exported model compares with the Keras model."""

    keras_path: str
    tflite_path: str
    quantize: str
    keras_file_bytes: int
    tflite_file_bytes: int
    weight_bytes: int
    parameters: int
    examples: int | None = None
    runtime: str | None = None
    max_abs_diff: float | None = None
    tolerance: float | None = None
    keras_accuracy: float | None = None
    tflite_accuracy: float | None = None
    prediction_agreement: float | None = None
    clients: int | None = None
    bytes_per_round_down: float | None = None
    bytes_per_round_up: float | None = None
    bytes_per_round_per_client: float | None = None
    vocabulary_path: str | None = None

    @property
    def within_tolerance(self) -> bool:
        """Whether the outputs matched (``True`` when no data was checked)."""
        if self.max_abs_diff is None or self.tolerance is None:
            return True
        return self.max_abs_diff <= self.tolerance

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        from fedflower.outputs.console import human_bytes

        out = [
            f"wrote {self.tflite_path} ({human_bytes(self.tflite_file_bytes)}, "
            f"quantize={self.quantize})",
            f"keras model {human_bytes(self.keras_file_bytes)} on disk, {self.parameters} "
            f"parameters = {human_bytes(self.weight_bytes)} of float32 weights",
        ]
        if self.vocabulary_path is not None:
            out.append(
                f"LiteRT has no string lookup among its built-in operators: the TFLite model "
                f"takes each categorical column as the index of its value in "
                f"{self.vocabulary_path} (NaN or -1: empty or unknown)"
            )
        if self.max_abs_diff is not None:
            out.append(
                f"parity on {self.examples} test examples ({self.runtime} interpreter): "
                f"max |keras - tflite| = "
                f"{self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}), accuracy keras "
                f"{self.keras_accuracy:.4f} / tflite {self.tflite_accuracy:.4f}, "
                f"same predicted class for {100 * (self.prediction_agreement or 0):.2f}%"
            )
        if self.bytes_per_round_per_client is not None:
            out.append(
                f"per round the run sent {human_bytes(self.bytes_per_round_down or 0)} down and "
                f"{human_bytes(self.bytes_per_round_up or 0)} up over {self.clients} clients: "
                f"{human_bytes(self.bytes_per_round_per_client)} per client per round"
            )
        return out


def _quiet() -> contextlib.ExitStack:
    """Silence the converter's prints and TensorFlow's deprecation warnings."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def convert(model: Any, quantize: str = "none") -> bytes:
    """Convert a Keras model to a TFLite flatbuffer.

    Parameters
    ----------
    model : keras.Model
        The model to convert.
    quantize : {"none", "dynamic"}
        ``dynamic`` stores the weights as int8 (dynamic-range quantization).
    """
    import tensorflow as tf

    if quantize not in QUANTIZATIONS:
        raise ConfigError(
            f"quantize={quantize!r} is unknown; use one of {', '.join(QUANTIZATIONS)}"
        )
    with _quiet():
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if quantize == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return bytes(converter.convert())


def runtime_name() -> str:
    """The interpreter :func:`tflite_predict` uses: LiteRT when installed, else TensorFlow's."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return "tf.lite"
    return "ai_edge_litert"


def _interpreter(flatbuffer: bytes) -> Any:
    if runtime_name() == "ai_edge_litert":
        from ai_edge_litert.interpreter import Interpreter  # the on-device LiteRT runtime
    else:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    with _quiet():
        return Interpreter(model_content=flatbuffer)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null (the interpreter's C++ INFO lines), then restore."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def tflite_predict(flatbuffer: bytes, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run a TFLite model on ``x`` (float32, first axis = examples) and return its outputs."""
    with _native_stderr_silenced():
        return _predict(flatbuffer, x, batch_size)


def _predict(flatbuffer: bytes, x: np.ndarray, batch_size: int) -> np.ndarray:
    interpreter = _interpreter(flatbuffer)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    x = np.asarray(x, dtype=inp["dtype"])
    outputs = []
    current = -1
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        if len(batch) != current:
            interpreter.resize_tensor_input(inp["index"], [len(batch), *x.shape[1:]])
            interpreter.allocate_tensors()
            current = len(batch)
        interpreter.set_tensor(inp["index"], batch)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_tensor(out["index"])))
    return np.concatenate(outputs) if outputs else np.zeros((0,), dtype=np.float32)


def predicted_class(outputs: np.ndarray) -> np.ndarray:
    """Class per example from a fedflower model's outputs (sigmoid unit or softmax)."""
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        return (outputs.reshape(len(outputs)) >= 0.5).astype(np.int64)
    return np.argmax(outputs, axis=-1)


def test_source_of_run(model_path: Path) -> Any:
    """The dataset of the run whose ``results.json`` sits next to ``model_path`` (or None)."""
    run = RunDir(model_path.parent)
    if not run.finished:
        return None
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = run.config()
    if "dataset" not in config:
        return None
    return instantiate(OmegaConf.create(config["dataset"]))


def test_data_of_run(model_path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The central test set of the run whose ``results.json`` sits next to ``model_path``."""
    source = test_source_of_run(model_path)
    return None if source is None else (source.x_test, source.y_test)


def traffic_of_run(model_path: Path) -> tuple[int, float, float] | None:
    """``(clients, mean bytes down, mean bytes up)`` per round of the run next to the model."""
    run = RunDir(model_path.parent)
    if not run.finished:
        return None
    rows = run.metrics()
    if not rows:
        return None
    clients = int(run.config().get("num_clients", 0))
    down = float(np.mean([r["bytes_down"] for r in rows]))
    up = float(np.mean([r["bytes_up"] for r in rows]))
    return clients, down, up


@dataclass(frozen=True)
class Checked:
    """Test data for the parity check: the Keras model's inputs, TFLite's rows, labels."""

    keras_inputs: Any
    rows: np.ndarray
    y: np.ndarray
    model: Any


def write_vocabulary(target: Path, meta: dict[str, Any]) -> Path:
    """Write ``<model>.vocab.json`` beside the flatbuffer: each categorical column's values.

    In index order: the TFLite model reads a category as the index of its value in that
    list (NaN or -1: empty or unknown).
    """
    fitted = meta["preprocessing"]
    vocab = {
        "columns": [*meta["numeric"], *meta["categorical"]],
        "numeric": meta["numeric"],
        "categorical": dict(zip(meta["categorical"], fitted["vocabularies"], strict=True)),
        "class_names": meta["class_names"],
    }
    path = target.with_suffix(".vocab.json")
    path.write_text(json.dumps(vocab, indent=1) + "\n")
    return path


def table_parity_data(
    model: Any, meta: dict[str, Any], numeric: np.ndarray, texts: list[np.ndarray], y: np.ndarray
) -> Checked:
    """A table model's parity data from raw columns (numbers with NaN, category text)."""
    from fedflower import model_inputs

    feed = model_inputs.feed(meta, numeric, texts)
    return Checked(feed, model_inputs.numeric_rows(meta, numeric, texts), y, model)


def parity_data(
    path: Path, model: Any, meta: dict[str, Any] | None, data: str | Path | None, label: str
) -> Checked | None:
    """The rows to compare Keras and TFLite on: ``--data``, else the run's test set."""
    if meta is not None:
        columns = table_test_columns(path, meta, data)
        return None if columns is None else table_parity_data(model, meta, *columns)
    if data is not None:
        from fedflower.deploy.local_data import load_file

        client = load_file(data, label_column=label, val_fraction=0.0)
        return Checked(client.x_train, client.x_train, client.y_train, model)
    xy = test_data_of_run(path)
    return None if xy is None else Checked(xy[0], xy[0], xy[1], model)


def table_test_columns(
    path: Path, meta: dict[str, Any], data: str | Path | None
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray] | None:
    """Raw columns and labels of ``data`` (a table file) or of the run's test set."""
    from fedflower.aggregation.preprocessing import split_raw
    from fedflower.data import files, tables
    from fedflower.predict import table_columns

    if data is not None:
        file = files.check_path(data, files.TABLE_SUFFIXES)
        table = files.read_table(file)
        tables.check_named(file, table, [meta["label"]])
        y = files.label_codes(file, table[meta["label"]], "the file", meta["class_names"])
        return (*table_columns(file, table, meta), y)
    run = test_source_of_run(path)
    if run is None or run.columns is None:
        return None
    numeric, texts = split_raw(run.x_test, run.columns.categories)
    return numeric, texts, run.y_test


def compare(report: ExportReport, flatbuffer: bytes, checked: Checked, tolerance: float) -> None:
    """Run both models on the parity data and record the differences in ``report``."""
    keras_out = np.asarray(checked.model.predict(checked.keras_inputs, batch_size=1024, verbose=0))
    lite_out = tflite_predict(flatbuffer, checked.rows)
    report.examples = len(checked.y)
    report.runtime = runtime_name()
    report.max_abs_diff = float(np.max(np.abs(keras_out - lite_out.reshape(keras_out.shape))))
    report.tolerance = float(tolerance)
    keras_cls, lite_cls = predicted_class(keras_out), predicted_class(lite_out)
    report.keras_accuracy = float(np.mean(keras_cls == checked.y))
    report.tflite_accuracy = float(np.mean(lite_cls == checked.y))
    report.prediction_agreement = float(np.mean(keras_cls == lite_cls))


def export(
    model_path: str | Path,
    out: str | Path | None = None,
    quantize: str = "none",
    data: str | Path | None = None,
    tolerance: float | None = None,
    label: str = "label",
) -> ExportReport:
    """Export ``model.keras`` to TFLite and compare both models on test data.

    Parameters
    ----------
    model_path : path
        A Keras model file (a run's ``model.keras``).
    out : path, optional
        The ``.tflite`` file (default: next to the model).
    quantize : {"none", "dynamic"}
        Weight quantization of the flatbuffer.
    data : path, optional
        A CSV/NPZ file (:mod:`fedflower.deploy.local_data` schema) to compare on; default:
        the run's central test set, rebuilt from ``results.json`` next to the model.
    tolerance : float, optional
        Largest allowed absolute output difference (default by ``quantize``).
    label : str
        The label column of ``data`` (a CSV file).
    """
    from fedflower import model_inputs

    path = model_inputs.model_file(model_path)
    model, meta = model_inputs.load(path)
    if meta is not None and meta.get("text"):
        raise DataError(
            f"{str(path)!r} reads text (column {meta['text']!r}), which LiteRT's built-in "
            "operators cannot tokenize; predict with: fedflower predict RUN_DIR DATA"
        )
    device = model if meta is None else model_inputs.with_numeric_row(model, meta)
    flatbuffer = convert(device, quantize)
    target = (Path(out).expanduser() if out else path.with_suffix(".tflite")).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(flatbuffer)
    weights = model.get_weights()
    report = ExportReport(
        keras_path=str(path),
        tflite_path=str(target),
        quantize=quantize,
        keras_file_bytes=path.stat().st_size,
        tflite_file_bytes=len(flatbuffer),
        weight_bytes=int(sum(w.nbytes for w in weights)),
        parameters=int(sum(w.size for w in weights)),
    )
    if meta is not None and meta["categorical"]:
        report.vocabulary_path = str(write_vocabulary(target, meta))
    checked = parity_data(path, model, meta, data, label)
    if checked is not None:
        compare(
            report, flatbuffer, checked, TOLERANCE[quantize] if tolerance is None else tolerance
        )
    traffic = traffic_of_run(path)
    if traffic is not None:
        clients, down, up = traffic
        report.clients = clients
        report.bytes_per_round_down, report.bytes_per_round_up = down, up
        report.bytes_per_round_per_client = (down + up) / max(clients, 1)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``fedflower export MODEL --to tflite``: export, check parity, print the report."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = argparse.ArgumentParser(
        prog="fedflower export",
        description="Export a run's global model for devices and check it against Keras.",
    )
    parser.add_argument(
        "model", help="the Keras model file, e.g. outputs/<date>/<time>/model.keras, or its run"
    )
    parser.add_argument("--to", choices=FORMATS, default="tflite", help="target format")
    parser.add_argument(
        "--out",
        help="output file, relative to the current directory (default: next to the model); "
        "the report prints its full path",
    )
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default="none")
    parser.add_argument("--data", help="CSV/NPZ test file (default: the run's central test set)")
    parser.add_argument(
        "--label", default="label", help="the label column of --data's CSV (a table model: its own)"
    )
    parser.add_argument("--tolerance", type=float, help="largest allowed |keras - tflite|")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    from fedflower.backend import quiet_tensorflow_import

    quiet_tensorflow_import()  # no oneDNN/absl start-up banner
    try:
        report = export(
            args.model, args.out, args.quantize, args.data, args.tolerance, label=args.label
        )
    except FedflowerError as exc:
        print(f"fedflower export: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({**asdict(report), "within_tolerance": report.within_tolerance}, indent=1))
    else:
        print("\n".join(report.lines()))
    if not report.within_tolerance:
        print(
            "fedflower export: error: TFLite outputs differ from Keras by "
            f"{report.max_abs_diff:.2e} > tolerance {report.tolerance:.0e}",
            file=sys.stderr,
        )
        return 1
    return 0
