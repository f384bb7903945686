"""The one writer of a run's ``metrics.jsonl`` and ``results.json``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedflower.outputs.rundir import RunDir


class RunWriter:
    """Write a run's rows as they come and its results at the end.

    ``metrics.jsonl`` is flushed after every row, so a reader (:class:`RunDir`, a deployment
    driver polling the file) sees each round as soon as it ends.

    Parameters
    ----------
    output_dir : path
        The run directory (created if missing); ``metrics.jsonl`` is started empty.
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.run_dir = RunDir(output_dir)
        self.run_dir.path.mkdir(parents=True, exist_ok=True)
        self._metrics = self.run_dir.metrics_path.open("w", encoding="utf-8")

    def row(self, row: dict[str, Any]) -> None:
        """Append one round's row to ``metrics.jsonl``."""
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()

    def rewrite(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` by ``rows`` (a run resumed from a checkpoint)."""
        self._metrics.seek(0)
        self._metrics.truncate()
        for row in rows:
            self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()

    def close(self) -> None:
        """Close ``metrics.jsonl``."""
        self._metrics.close()

    def results(self, results: dict[str, Any]) -> None:
        """Close ``metrics.jsonl`` and write ``results.json``."""
        self.close()
        self.run_dir.results_path.write_text(json.dumps(results, indent=2) + "\n")
