"""Everything a run reports: one line per round, ``metrics.jsonl``, ``results.json``, the plot.

The recorder is the only writer of a run's outputs. Strategies feed it through Flower's own
hooks (the metric-aggregation functions and ``evaluate_fn``), so it needs no change to them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fedflower import keys
from fedflower.server.per_client import per_client_lines
from fedflower.server.tracking import Sink

log = logging.getLogger(__name__)

MetricsAggr = Callable[[list[RecordDict], str], MetricRecord]


def human_bytes(n: float) -> str:
    """Format a byte count with a binary unit (``1.5 MiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _fmt(value: float | None) -> str:
    return "  -   " if value is None else f"{value:.4f}"


class Recorder:
    """Collect per-round metrics, print them and write the run's files.

    Parameters
    ----------
    output_dir : Path
        Where ``metrics.jsonl``, ``results.json`` and ``history.png`` go.
    num_rounds : int
        Planned number of rounds (for the progress bar).
    progress : bool
        Show a progress bar when the console is a terminal.
    sinks : sequence of Sink
        Also receive every metrics row and the results (TensorBoard, W&B; see
        :mod:`fedflower.server.tracking`).
    """

    def __init__(
        self,
        output_dir: Path,
        num_rounds: int,
        progress: bool = True,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.output_dir = Path(output_dir)
        self.sinks = list(sinks)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.num_rounds = num_rounds
        self.rows: list[dict[str, Any]] = []
        self.initial: dict[str, float] = {}
        self._fed: dict[str, float] = {}
        self._train: dict[str, float] = {}
        self._eval_dropped = 0
        self.eval_dropped = 0
        self.console = Console(highlight=False)
        self._progress = Progress(
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
        self._task = self._progress.add_task("rounds", total=num_rounds)
        self._metrics_file = (self.output_dir / "metrics.jsonl").open("w", encoding="utf-8")
        self._t0 = time.perf_counter()
        self._t_round = self._t0

    # -- hooks given to the strategy ---------------------------------------------------------
    def train_metrics_hook(self, inner: MetricsAggr | None = None) -> MetricsAggr:
        """A ``train_metrics_aggr_fn`` that also remembers the round's aggregated train metrics."""
        aggr = inner or aggregate_metricrecords

        def hook(contents: list[RecordDict], weight_key: str) -> MetricRecord:
            record = aggr(contents, weight_key)
            self._train = {k: float(v) for k, v in record.items() if isinstance(v, int | float)}
            return record

        return hook

    def evaluate_metrics_hook(self, inner: MetricsAggr | None = None) -> MetricsAggr:
        """An ``evaluate_metrics_aggr_fn`` that also remembers the federated evaluation.

        A client's evaluation with a NaN or infinite loss or metric is dropped (and counted in
        the round's ``eval_dropped``), not averaged into ``fed_loss``/``fed_accuracy``.
        """
        aggr = inner or aggregate_metricrecords

        def hook(contents: list[RecordDict], weight_key: str) -> MetricRecord:
            finite = [c for c in contents if all_finite(c)]
            if len(finite) < len(contents):
                self._eval_dropped += len(contents) - len(finite)
                log.warning(
                    "%d federated evaluation(s) with NaN or infinite values dropped",
                    len(contents) - len(finite),
                )
            if not finite:
                self._fed = {}
                return MetricRecord()
            record = aggr(finite, weight_key)
            self._fed = {k: float(v) for k, v in record.items() if isinstance(v, int | float)}
            return record

        return hook

    # -- checkpoint ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The rows recorded so far (for a checkpoint)."""
        return {"rows": self.rows, "initial": self.initial, "eval_dropped": self.eval_dropped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the rows and write them again as ``metrics.jsonl``'s first lines."""
        self.rows = list(state["rows"])
        self.initial = dict(state["initial"])
        self.eval_dropped = int(state["eval_dropped"])
        self._metrics_file.seek(0)
        self._metrics_file.truncate()
        for row in self.rows:
            self._metrics_file.write(json.dumps(row) + "\n")
        self._metrics_file.flush()
        self._progress.update(self._task, completed=len(self.rows))

    # -- events ------------------------------------------------------------------------------
    def start(self) -> None:
        """Show the progress bar and start the clock."""
        self._progress.start()
        self._t0 = self._t_round = time.perf_counter()

    def round_end(
        self,
        server_round: int,
        loss: float,
        accuracy: float,
        bytes_down: int,
        bytes_up: int,
        **extra: Any,
    ) -> dict[str, Any]:
        """Record the centralized evaluation after ``server_round`` (0 = initial model)."""
        now = time.perf_counter()
        if server_round == 0:
            self.initial = {"loss": loss, "accuracy": accuracy}
            self._t_round = now
            return self.initial
        row: dict[str, Any] = {
            "round": server_round,
            "loss": loss,
            "accuracy": accuracy,
            "fed_loss": self._fed.get(keys.EVAL_LOSS),
            "fed_accuracy": self._fed.get(keys.EVAL_ACCURACY),
            "train_loss": self._train.get(keys.TRAIN_LOSS),
            "bytes_down": bytes_down,
            "bytes_up": bytes_up,
            "seconds": now - self._t_round,
            "elapsed": now - self._t0,
            **extra,
        }
        if self._eval_dropped:
            row["eval_dropped"] = self._eval_dropped
            self.eval_dropped += self._eval_dropped
        self._t_round = now
        self._fed, self._train, self._eval_dropped = {}, {}, 0
        self.rows.append(row)
        self._metrics_file.write(json.dumps(row) + "\n")
        self._metrics_file.flush()
        for sink in self.sinks:
            sink.log_round(row)
        line = (
            f"round {server_round:>3}/{self.num_rounds} | test loss {_fmt(loss)} "
            f"acc {_fmt(accuracy)} | fed loss {_fmt(row['fed_loss'])} "
            f"acc {_fmt(row['fed_accuracy'])} | down {human_bytes(bytes_down):>9} "
            f"up {human_bytes(bytes_up):>9} | {row['seconds']:.1f}s"
        ) + _extra_text(row)
        self.console.print(line, soft_wrap=True)
        log.info(line)
        self._progress.advance(self._task)
        return row

    def finish(
        self,
        config: dict[str, Any],
        model_bytes: int,
        num_clients: int,
        plots: bool = True,
        **extra: Any,
    ) -> dict[str, Any]:
        """Write ``results.json`` and ``history.png``, print the summary, return the results."""
        self._progress.stop()
        self._metrics_file.close()
        last = self.rows[-1] if self.rows else {"loss": None, "accuracy": None}
        totals = {
            "rounds": len(self.rows),
            "bytes_down": sum(r["bytes_down"] for r in self.rows),
            "bytes_up": sum(r["bytes_up"] for r in self.rows),
            "seconds": time.perf_counter() - self._t0,
            "eval_dropped": self.eval_dropped,
        }
        communication = naive_estimate(self.rows, model_bytes, num_clients)
        communication["measured_bytes"] = totals["bytes_down"] + totals["bytes_up"]
        results = {
            "config": config,
            "initial": self.initial,
            "final": {"loss": last["loss"], "accuracy": last["accuracy"]},
            "totals": totals,
            "communication": communication,
            **extra,
        }
        (self.output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        for sink in self.sinks:
            sink.close(results)
        if plots and self.rows:
            plot_history(self.rows, self.output_dir / "history.png")
        self._summary(results)
        return results

    def _summary(self, results: dict[str, Any]) -> None:
        table = Table(title="fedflower run summary", show_header=False)
        final, totals, comm = results["final"], results["totals"], results["communication"]
        table.add_row("rounds", str(totals["rounds"]))
        table.add_row(
            "final test loss / accuracy", f"{_fmt(final['loss'])} / {_fmt(final['accuracy'])}"
        )
        table.add_row("bytes server -> clients", human_bytes(totals["bytes_down"]))
        table.add_row("bytes clients -> server", human_bytes(totals["bytes_up"]))
        table.add_row("measured total", human_bytes(comm["measured_bytes"]))
        if "async" not in results:  # asynchronous runs have no rounds of all clients
            per_round = comm["clients_per_round"]
            clients = f"{per_round:.0f}" if float(per_round).is_integer() else f"{per_round:.1f}"
            table.add_row("clients trained per round", f"{clients} of {comm['num_clients']}")
            table.add_row("model bytes", human_bytes(comm["model_bytes"]))
            table.add_row(
                f"naive estimate: {NAIVE_ESTIMATE}", human_bytes(comm["naive_estimate_bytes"])
            )
        table.add_row("wall time", f"{totals['seconds']:.1f} s")
        for label, value in per_client_lines(results.get("per_client")):
            table.add_row(label, value)
        if results.get("virtual_time") is not None:
            table.add_row("virtual time (latency model)", f"{results['virtual_time']:.1f} s")
        if "async" in results:
            a = results["async"]
            table.add_row(
                "client tasks / folded / dropped / failed",
                f"{a['tasks']} / {a['folded']} / {a['dropped']} / {a['failed']}",
            )
        if results.get("compression_up") or results.get("compression_down"):
            table.add_row(
                "compression up / down (bytes uncompressed / sent)",
                f"{_ratio(results.get('compression_up'))} / "
                f"{_ratio(results.get('compression_down'))}",
            )
        if "privacy" in results:
            p = results["privacy"]
            stop = p.get("stopped_for_budget_after")
            table.add_row(
                f"privacy ({p['mode']}, {p['adjacency'].split(',')[0]})",
                f"epsilon {p['epsilon']:.3f} at delta {p['delta']:.0e}"
                + (f"; budget stop after round {stop}" if stop else ""),
            )
        self.console.print(table)
        # outside the table, never wrapped: the whole path on any terminal width or in a pipe
        self.console.print(f"outputs: {self.output_dir.resolve()}", soft_wrap=True, markup=False)


NAIVE_ESTIMATE = "clients x model bytes x rounds"
"""What the naive traffic estimate counts: one model download per client trained, every round
(the clients trained per round: with sampling fewer than the federation's)."""


def naive_estimate(
    rows: Sequence[dict[str, Any]], model_bytes: int, num_clients: int
) -> dict[str, Any]:
    """The naive traffic estimate of ``results.json``'s ``communication``.

    The clients per round are those sent a model to train (the rows' ``train_clients``, which
    the metering grid reports): with sampling (``fraction_train < 1``, a population of
    clients) fewer than ``num_clients``. Rows without the field count ``num_clients``.
    """
    trained = sum(int(r.get("train_clients", num_clients)) for r in rows)
    return {
        "model_bytes": model_bytes,
        "naive_estimate": NAIVE_ESTIMATE,
        "naive_estimate_bytes": trained * model_bytes,
        "num_clients": num_clients,
        "clients_per_round": trained / len(rows) if rows else 0.0,
    }


def all_finite(content: RecordDict) -> bool:
    """Whether every number in the content's metric records is finite."""
    for record in content.metric_records.values():
        for value in record.values():
            values = value if isinstance(value, list) else [value]
            if not all(math.isfinite(float(v)) for v in values):
                return False
    return True


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def _extra_text(row: dict[str, Any]) -> str:
    """The per-line suffix for virtual time and asynchronous statistics, when present."""
    text = ""
    if row.get("virtual_time") is not None:
        text += f" | t={row['virtual_time']:.1f}s"
    if row.get("staleness_mean") is not None:
        text += f" | staleness {row['staleness_mean']:.1f} (max {row['staleness_max']})"
    if row.get("compression_up") is not None or row.get("compression_down") is not None:
        up, down = row.get("compression_up"), row.get("compression_down")
        text += f" | compression up {_ratio(up)} down {_ratio(down)}"
    if row.get("dropped"):
        text += f" | dropped {row['dropped']}"
    if row.get("failed"):
        text += f" | failed {row['failed']}"
    if row.get("epsilon") is not None:
        delta = row.get("delta")
        text += f" | eps {row['epsilon']:.3f}" + ("" if delta is None else f" (delta {delta:.0e})")
    return text


def plot_history(rows: list[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per round, centralized and federated, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(rounds, [r[key] for r in rows], marker="o", label="global model, central test set")
        fed = [r[f"fed_{key}"] for r in rows]
        if any(v is not None for v in fed):
            ax.plot(rounds, fed, marker="s", label="federated evaluation (clients' validation)")
        ax.set_xlabel("round")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
