"""``fedflower predict RUN_DIR_OR_MODEL DATA [--out preds.csv]``: a trained model on raw rows.

A model trained on a CSV or Parquet table carries its preprocessing (fill, scale, one-hot)
and its columns and class names (:mod:`fedflower.model_inputs`), so it reads the rows of any
file with those columns, in any order, empty cells included. The predictions file has one row
per input row: the predicted class name and the probability of each class. When the file
holds the label column, the accuracy is printed too.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedflower.data import files, tables
from fedflower.errors import DataError, FedflowerError
from fedflower.startup import EXIT_USAGE


def load(target: str | Path) -> tuple[Any, dict[str, Any]]:
    """The model and its stored columns; a model of feature arrays is refused in one line."""
    from fedflower import model_inputs

    model, meta = model_inputs.load(target)
    if meta is None:
        raise DataError(
            f"{str(target)!r} takes feature arrays, not table rows (the model was not trained on "
            "a CSV/Parquet table); predict with keras.saving.load_model(...).predict(x)"
        )
    return model, meta


def table_columns(
    path: Path, table: dict[str, np.ndarray], meta: dict[str, Any]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The model's columns of a table: numbers (NaN where empty) and the categories' text."""
    for name in [*meta["numeric"], *meta["categorical"]]:
        if name not in table:
            raise files.fail(
                path,
                f"has no column {name!r} (the model reads {meta['numeric'] + meta['categorical']})",
                "give the columns the model was trained on",
            )
    numbers = [tables.numeric_column(path, table[c], c) for c in meta["numeric"]]
    numeric = (
        np.stack(numbers, axis=1) if numbers else np.zeros((len(table[meta["categorical"][0]]), 0))
    )
    return numeric, [table[c].astype(str) for c in meta["categorical"]]


def inputs(path: Path, table: dict[str, np.ndarray], meta: dict[str, Any]) -> Any:
    """The model's inputs: numbers (NaN where empty) and text, by column name."""
    from fedflower import model_inputs

    if meta.get("text"):  # a text model: one string per row
        import tensorflow as tf

        if meta["text"] not in table:
            raise files.fail(path, f"has no column {meta['text']!r}", "give the text column")
        return tf.constant(table[meta["text"]].astype(str)[:, None])
    return model_inputs.feed(meta, *table_columns(path, table, meta))


def probabilities(raw: np.ndarray, classes: int) -> np.ndarray:
    """Class probabilities from the model's output (one sigmoid unit or one per class)."""
    raw = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
    if raw.shape[1] == 1 and classes == 2:
        return np.concatenate([1 - raw, raw], axis=1)
    if np.any(raw < 0) or not np.allclose(raw.sum(axis=1), 1, atol=1e-3):  # logits
        raw = np.exp(raw - raw.max(axis=1, keepdims=True))
        raw /= raw.sum(axis=1, keepdims=True)
    return raw


def write(path: Path, names: Sequence[str], probs: np.ndarray) -> None:
    """One row per input row: the predicted class and each class's probability."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "prediction", *(f"p_{n}" for n in names)])
        for i, row in enumerate(probs):
            writer.writerow([i, names[int(np.argmax(row))], *(f"{p:.6f}" for p in row)])


def predict(target: str, data: str, out: str | None = None) -> dict[str, Any]:
    """Predict every row of ``data``; write the predictions file; return the summary."""
    model, meta = load(target)
    path = files.check_path(data, files.TABLE_SUFFIXES)
    table = files.read_table(path)
    names = [str(n) for n in meta["class_names"]]
    raw = model(inputs(path, table, meta), training=False)
    probs = probabilities(np.asarray(raw), len(names))
    out_path = Path(out) if out else path.with_name(f"{path.stem}.predictions.csv")
    write(out_path, names, probs)
    summary: dict[str, Any] = {"rows": len(probs), "out": str(out_path), "accuracy": None}
    label = meta["label"]
    if label in table:
        tables.check_filled(path, table, label, "label")
        truth = files.label_codes(path, table[label], "the file", names)
        summary["accuracy"] = float(np.mean(np.argmax(probs, axis=1) == truth))
    return summary


def main(argv: Sequence[str]) -> int:
    """Entry point of ``fedflower predict``."""
    parser = argparse.ArgumentParser(
        prog="fedflower predict", description="Predict raw table rows with a trained model."
    )
    parser.add_argument("model", help="a run directory (holding model.keras) or a .keras file")
    parser.add_argument("data", help="a CSV or Parquet file with the model's columns")
    parser.add_argument("--out", help="predictions file (default: DATA.predictions.csv)")
    args = parser.parse_args(list(argv))
    try:
        summary = predict(args.model, args.data, args.out)
    except FedflowerError as exc:
        print(f"fedflower predict: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    line = f"{summary['rows']} predictions -> {summary['out']}"
    if summary["accuracy"] is not None:
        line += f" | accuracy {summary['accuracy']:.4f}"
    print(line)
    return 0
