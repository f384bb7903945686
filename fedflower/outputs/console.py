"""The console sink: a progress bar, one line per round, the summary table at the end."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fedflower.outputs.fields import round_suffix, summary_rows

log = logging.getLogger(__name__)

NAIVE_ESTIMATE = "clients x model bytes x rounds"
"""What the naive traffic estimate counts: one model download per client trained, every round
(the clients trained per round: with sampling fewer than the federation's)."""


def human_bytes(n: float) -> str:
    """Format a byte count with a binary unit (``1.5 MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _fmt(value: float | None) -> str:
    return "  -   " if value is None else f"{value:.4f}"


def round_line(row: dict[str, Any], num_rounds: int) -> str:
    """The console line of one round: test and federated metrics, traffic, time, features."""
    return (
        f"round {row['round']:>3}/{num_rounds} | test loss {_fmt(row['loss'])} "
        f"acc {_fmt(row['accuracy'])} | fed loss {_fmt(row['fed_loss'])} "
        f"acc {_fmt(row['fed_accuracy'])} | down {human_bytes(row['bytes_down']):>9} "
        f"up {human_bytes(row['bytes_up']):>9} | {row['seconds']:.1f}s"
    ) + round_suffix(row)


class NotebookProgress:
    """A progress bar for Jupyter: one HTML ``<progress>`` output updated in place.

    Rich's live display needs ``ipywidgets`` in a notebook; an IPython display handle needs
    nothing beyond the kernel, and an executed notebook keeps its last state (``nbclient``
    applies the updates to the cell's output).

    Parameters
    ----------
    total : int
        Planned number of rounds.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.completed = 0
        self._handle: Any = None

    def _html(self) -> dict[str, str]:
        text = f"federated training {self.completed}/{self.total} rounds"
        bar = f'<progress value="{self.completed}" max="{self.total}"></progress>'
        return {"text/plain": text, "text/html": f"{bar} {text}"}

    def start(self) -> None:
        """Show the bar (an output of the running cell)."""
        from IPython.display import display

        self._handle = display(self._html(), raw=True, display_id=True)

    def add_task(self, _description: str, total: int) -> TaskID:
        """The one task: the rounds (as rich's ``Progress.add_task``)."""
        self.total = total
        return TaskID(0)

    def update(self, _task: Any, completed: int) -> None:
        """Set the rounds done (a resumed run)."""
        self.completed = completed
        self._show()

    def advance(self, _task: Any) -> None:
        """One more round done."""
        self.completed += 1
        self._show()

    def _show(self) -> None:
        if self._handle is not None:
            self._handle.update(self._html(), raw=True)

    def stop(self) -> None:
        """Leave the bar at its last state (a record of the run in the notebook)."""


class ConsoleSink:
    """Print the run: a transient progress bar, a line per round, a summary table.

    Parameters
    ----------
    output_dir : Path
        Printed under the summary.
    num_rounds : int
        Planned number of rounds (for the progress bar and the round lines).
    progress : bool
        Show a progress bar when the console is a terminal or a Jupyter notebook.
    """

    def __init__(self, output_dir: Path, num_rounds: int, progress: bool = True) -> None:
        self.output_dir = output_dir
        self.num_rounds = num_rounds
        self.console = Console(highlight=False)
        self._progress = self._make_progress(progress)
        self._task = self._progress.add_task("rounds", total=num_rounds)

    def _make_progress(self, progress: bool) -> Progress | NotebookProgress:
        """Rich's bar in a terminal, an HTML bar in Jupyter, none in a pipe."""
        if progress and self.console.is_jupyter:
            return NotebookProgress(self.num_rounds)
        return Progress(
            TextColumn("[bold]federated training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rounds"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not (progress and self.console.is_terminal),
        )

    def start(self) -> None:
        """Show the progress bar."""
        self._progress.start()

    def restored(self, rounds: int) -> None:
        """Move the progress bar to ``rounds`` done (a run resumed from a checkpoint)."""
        self._progress.update(self._task, completed=rounds)

    def log_round(self, row: dict[str, Any]) -> None:
        """Print (and log) the round's line and advance the progress bar."""
        line = round_line(row, self.num_rounds)
        self.console.print(line, soft_wrap=True)
        log.info(line)
        self._progress.advance(self._task)

    def stop(self) -> None:
        """Remove the progress bar."""
        self._progress.stop()

    def summary(self, results: dict[str, Any]) -> None:
        """Print the summary table and the output directory."""
        table = Table(title="fedflower run summary", show_header=False)
        for label, value in _base_rows(results) + summary_rows(results):
            table.add_row(label, value)
        self.console.print(table)
        # outside the table, never wrapped: the whole path on any terminal width or in a pipe
        self.console.print(f"outputs: {self.output_dir.resolve()}", soft_wrap=True, markup=False)


def _base_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    final, totals, comm = results["final"], results["totals"], results["communication"]
    rows = [
        ("rounds", str(totals["rounds"])),
        ("final test loss / accuracy", f"{_fmt(final['loss'])} / {_fmt(final['accuracy'])}"),
        ("bytes server -> clients", human_bytes(totals["bytes_down"])),
        ("bytes clients -> server", human_bytes(totals["bytes_up"])),
        ("measured total", human_bytes(comm["measured_bytes"])),
    ]
    stats = results.get("statistics")
    if stats:  # a table's statistics round, before training
        noise = "no noise" if stats["noise_multiplier"] <= 0 else "noised on the nodes"
        traffic = f"{human_bytes(stats['bytes_down'])} down, {human_bytes(stats['bytes_up'])} up"
        rows.append((f"table statistics ({stats['nodes']} nodes)", f"{traffic}, {noise}"))
    if "async" not in results:  # asynchronous runs have no rounds of all clients
        per_round = comm["clients_per_round"]
        clients = f"{per_round:.0f}" if float(per_round).is_integer() else f"{per_round:.1f}"
        rows += [
            ("clients trained per round", f"{clients} of {comm['num_clients']}"),
            ("model bytes", human_bytes(comm["model_bytes"])),
            (f"naive estimate: {NAIVE_ESTIMATE}", human_bytes(comm["naive_estimate_bytes"])),
        ]
    return [*rows, ("wall time", f"{totals['seconds']:.1f} s")]
