"""The one reader of a run directory (``metrics.jsonl``, ``results.json``, the saved model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedflower.errors import DataError

METRICS_FILE = "metrics.jsonl"
"""One JSON object per round, written as the round ends."""
RESULTS_FILE = "results.json"
"""The run's summary (configuration, final metrics, totals), written when the run ends."""
PER_CLIENT_FILE = "per_client.jsonl"
"""One JSON object per client and round, for runs that record them."""
PLOT_FILE = "history.png"
MODEL_FILE = "model.keras"
OVERRIDES_FILE = ".hydra/overrides.yaml"
"""Hydra's record of the command-line overrides of the run."""


class RunDir:
    """A run's output directory, read lazily: every method reads the files again.

    Parameters
    ----------
    path : path
        The directory holding ``metrics.jsonl`` and (once the run has ended) ``results.json``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def metrics_path(self) -> Path:
        """``metrics.jsonl``: one row per round."""
        return self.path / METRICS_FILE

    @property
    def results_path(self) -> Path:
        """``results.json``: written when the run ends."""
        return self.path / RESULTS_FILE

    @property
    def model_path(self) -> Path:
        """The final global model, ``model.keras``."""
        return self.path / MODEL_FILE

    @property
    def finished(self) -> bool:
        """Whether the run has written its ``results.json``."""
        return self.results_path.is_file()

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl`` so far (none before the first round ends)."""
        return self.rows(METRICS_FILE)

    def metrics_frame(self) -> Any:
        """``metrics.jsonl`` as a pandas DataFrame, one row per round (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.metrics())

    def rows(self, name: str) -> list[dict[str, Any]]:
        """The rows of the JSON-lines file ``name`` in the run directory (none if absent)."""
        path = self.path / name
        if not path.is_file():
            return []
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the run in {self.path}: {exc}") from exc

    def results(self) -> dict[str, Any]:
        """The content of ``results.json``.

        Raises
        ------
        DataError
            When the file is missing or not JSON.
        """
        try:
            return dict(json.loads(self.results_path.read_text()))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the run in {self.path}: {exc}") from exc

    def config(self) -> dict[str, Any]:
        """The run's composed configuration (``results.json``'s ``config``; empty if absent)."""
        if not self.finished:
            return {}
        return dict(self.results().get("config", {}))

    def overrides(self) -> list[str] | None:
        """The run's Hydra overrides, or ``None`` when Hydra did not record them."""
        path = self.path / OVERRIDES_FILE
        if not path.is_file():
            return None
        from omegaconf import OmegaConf

        return [str(o) for o in OmegaConf.load(path)]


def find_runs(root: str | Path) -> list[RunDir]:
    """Every finished run (a directory with ``results.json``) under ``root``, in path order."""
    return [RunDir(p.parent) for p in sorted(Path(root).rglob(RESULTS_FILE))]
