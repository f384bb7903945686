"""The server's side of a run's outputs: it turns Flower's hooks into rows and results.

Strategies feed the recorder through Flower's own hooks (the metric-aggregation functions and
``evaluate_fn``), so it needs no change to them. It hands every row and the results to the
outputs: the :class:`~fedflower.outputs.writer.RunWriter` (``metrics.jsonl``, ``results.json``),
the console, the plot and the trackers (:mod:`fedflower.outputs`, including its ``tracking``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flwr.app import MetricRecord, RecordDict
from rich.console import Console

from fedflower import keys
from fedflower.outputs.console import NAIVE_ESTIMATE, ConsoleSink, human_bytes
from fedflower.outputs.plots import plot_history
from fedflower.outputs.rundir import PLOT_FILE
from fedflower.outputs.tracking import Sink
from fedflower.outputs.writer import RunWriter
from fedflower.records import aggregate_metricrecords, records_of

log = logging.getLogger(__name__)

MetricsAggr = Callable[[list[RecordDict], str], MetricRecord]

__all__ = [
    "NAIVE_ESTIMATE",
    "Recorder",
    "RoundMetrics",
    "all_finite",
    "human_bytes",
    "naive_estimate",
    "plot_history",
]


class RoundMetrics:
    """The clients' aggregated metrics of the current round, caught by the strategy's hooks.

    Made before the strategy (whose ``train_metrics_aggr_fn``/``evaluate_metrics_aggr_fn`` are
    its hooks) and handed to the :class:`Recorder`, which takes them at each round's end; so
    the strategy is built once, before any output of the run exists.
    """

    def __init__(self) -> None:
        self.fed: dict[str, float] = {}
        self.train: dict[str, float] = {}
        self.eval_dropped = 0

    def train_hook(self, inner: MetricsAggr | None = None) -> MetricsAggr:
        """A ``train_metrics_aggr_fn`` that also remembers the round's aggregated train metrics."""
        aggr = inner or aggregate_metricrecords

        def hook(contents: list[RecordDict], weight_key: str) -> MetricRecord:
            record = aggr(contents, weight_key)
            self.train = {k: float(v) for k, v in record.items() if isinstance(v, int | float)}
            return record

        return hook

    def evaluate_hook(self, inner: MetricsAggr | None = None) -> MetricsAggr:
        """An ``evaluate_metrics_aggr_fn`` that also remembers the federated evaluation.

        A client's evaluation with a NaN or infinite loss or metric is dropped (and counted in
        the round's ``eval_dropped``), not averaged into ``fed_loss``/``fed_accuracy``.
        """
        aggr = inner or aggregate_metricrecords

        def hook(contents: list[RecordDict], weight_key: str) -> MetricRecord:
            finite = [c for c in contents if all_finite(c)]
            if len(finite) < len(contents):
                self.eval_dropped += len(contents) - len(finite)
                log.warning(
                    "%d federated evaluation(s) with NaN or infinite values dropped",
                    len(contents) - len(finite),
                )
            if not finite:
                self.fed = {}
                return MetricRecord()
            record = aggr(finite, weight_key)
            self.fed = {k: float(v) for k, v in record.items() if isinstance(v, int | float)}
            return record

        return hook

    def take(self) -> tuple[dict[str, float], dict[str, float], int]:
        """The round's federated evaluation, train metrics and dropped evaluations; reset."""
        taken = self.fed, self.train, self.eval_dropped
        self.fed, self.train, self.eval_dropped = {}, {}, 0
        return taken


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
        :mod:`fedflower.outputs.tracking`).
    metrics : RoundMetrics, optional
        Where the strategy's metric hooks put each round's client metrics (default: new).
    """

    def __init__(
        self,
        output_dir: Path,
        num_rounds: int,
        progress: bool = True,
        sinks: Sequence[Sink] = (),
        metrics: RoundMetrics | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.metrics = RoundMetrics() if metrics is None else metrics
        self.sinks = list(sinks)
        self.num_rounds = num_rounds
        self.rows: list[dict[str, Any]] = []
        self.initial: dict[str, float] = {}
        self.eval_dropped = 0
        self._writer = RunWriter(self.output_dir)
        self._console = ConsoleSink(self.output_dir, num_rounds, progress)
        self._t0 = time.perf_counter()
        self._t_round = self._t0

    @property
    def console(self) -> Console:
        """The console the run prints to (a test may swap it for a recording one)."""
        return self._console.console

    @console.setter
    def console(self, console: Console) -> None:
        self._console.console = console

    # -- hooks given to the strategy ---------------------------------------------------------
    def train_metrics_hook(self, inner: MetricsAggr | None = None) -> MetricsAggr:
        """A ``train_metrics_aggr_fn`` feeding this recorder (see :class:`RoundMetrics`)."""
        return self.metrics.train_hook(inner)

    def evaluate_metrics_hook(self, inner: MetricsAggr | None = None) -> MetricsAggr:
        """An ``evaluate_metrics_aggr_fn`` feeding this recorder (see :class:`RoundMetrics`)."""
        return self.metrics.evaluate_hook(inner)

    # -- checkpoint ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The rows recorded so far (for a checkpoint)."""
        return {"rows": self.rows, "initial": self.initial, "eval_dropped": self.eval_dropped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the rows and write them again as ``metrics.jsonl``'s first lines."""
        self.rows = list(state["rows"])
        self.initial = dict(state["initial"])
        self.eval_dropped = int(state["eval_dropped"])
        self._writer.rewrite(self.rows)
        self._console.restored(len(self.rows))

    # -- events ------------------------------------------------------------------------------
    def start(self) -> None:
        """Show the progress bar and start the clock."""
        self._console.start()
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
        fed, train, dropped = self.metrics.take()
        row: dict[str, Any] = {
            "round": server_round,
            "loss": loss,
            "accuracy": accuracy,
            "fed_loss": fed.get(keys.EVAL_LOSS),
            "fed_accuracy": fed.get(keys.EVAL_ACCURACY),
            "train_loss": train.get(keys.TRAIN_LOSS),
            "bytes_down": bytes_down,
            "bytes_up": bytes_up,
            "seconds": now - self._t_round,
            "elapsed": now - self._t0,
            **extra,
        }
        if dropped:
            row["eval_dropped"] = dropped
            self.eval_dropped += dropped
        self._t_round = now
        self.rows.append(row)
        self._writer.row(row)
        for sink in self.sinks:
            sink.log_round(row)
        self._console.log_round(row)
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
        self._console.stop()
        self._writer.close()
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
        self._writer.results(results)
        for sink in self.sinks:
            sink.close(results)
        if plots and self.rows:
            plot_history(self.rows, self.output_dir / PLOT_FILE)
        self._console.summary(results)
        return results


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
    for record in records_of(content, MetricRecord):
        for value in record.values():
            values = value if isinstance(value, list) else [value]
            if not all(math.isfinite(float(v)) for v in values):
                return False
    return True
