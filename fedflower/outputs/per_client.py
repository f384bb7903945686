"""Every site's own answer: per-client evaluation rows, their spread and the final table.

A weighted mean hides the site the global model serves worst. :class:`PerClientLog` streams
one row per client, model and federated evaluation to ``per_client.jsonl`` (the rows come
from :class:`fedflower.server.per_client.PerClientGrid`, which reads the evaluation replies
where they cross the grid), keeping only the current and the final round's rows, so a sampled
run over a population of 100k clients stays flat in memory. The spread of each round (mean,
worst, 10th percentile, standard deviation of accuracy) joins the round's metrics row (and so
TensorBoard); the final round's table, and with ``baseline=local`` each site's gain from
joining, land in ``results.json``'s ``per_client`` block and the summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedflower import keys

PER_CLIENT_FILE = "per_client.jsonl"
PLOT_FILE = "per_client.png"
MODELS = (keys.MODEL_GLOBAL, keys.MODEL_PERSONAL, keys.MODEL_LOCAL)


def _prefix(model: str) -> str:
    return "" if model == keys.MODEL_GLOBAL else f"{model}_"


def model_rows(server_round: int, client: str, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows one evaluate reply's metrics make: one per model it reports.

    ``eval_loss``, ``eval_accuracy`` and any other ``eval_<metric>`` are the global model's;
    the same keys prefixed with ``personal_`` or ``local_`` are that model's.
    """
    rows = []
    num_examples = int(metrics.get(keys.NUM_EXAMPLES, 0))
    for model in MODELS:
        prefix = _prefix(model) + "eval_"
        if f"{prefix}loss" not in metrics:
            continue
        row: dict[str, Any] = {
            "round": server_round,
            "client": client,
            "model": model,
            "num_examples": num_examples,
        }
        for key, value in metrics.items():
            if key.startswith(prefix):
                row[key[len(prefix) :]] = float(value)
        rows.append(row)
    return rows


def spread(accuracies: Iterable[float]) -> dict[str, float]:
    """Mean, worst, 10th percentile and standard deviation of the clients' accuracies.

    Clients count equally (a site is a site, whatever its size); the 10th percentile is
    NumPy's linear interpolation, the standard deviation the population one.
    """
    acc = np.asarray(list(accuracies), dtype=np.float64)
    if acc.size == 0:
        return {}
    return {
        "mean": float(acc.mean()),
        "worst": float(acc.min()),
        "p10": float(np.percentile(acc, 10)),
        "std": float(acc.std()),
        "clients": int(acc.size),
    }


class PerClientLog:
    """Writes ``per_client.jsonl`` and summarises the rows of each round.

    Parameters
    ----------
    output_dir : Path
        The run directory.
    plots : bool
        Draw ``per_client.png`` (the final round's accuracy per site) at the end.
    resume : bool
        Append to the file of a run being resumed (its checkpoint says where it ended).
    names : mapping, optional
        A client's name in the rows for the name it is reported by (a partition id -> the
        site it holds, when the data name their sites).
    """

    def __init__(
        self,
        output_dir: Path,
        plots: bool = True,
        resume: bool = False,
        names: Mapping[str, str] | None = None,
    ) -> None:
        self.names = dict(names or {})
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.plots = plots
        path = self.output_dir / PER_CLIENT_FILE
        self._file = path.open("a" if resume else "w", encoding="utf-8")
        self._round: list[dict[str, Any]] = []
        self.final: list[dict[str, Any]] = []
        self.local: dict[str, float] = {}  # site -> local-only accuracy (baseline=local)

    def add(self, server_round: int, client: str, metrics: Mapping[str, Any]) -> None:
        """Write the rows of one client's evaluation (one per model it reports)."""
        client = self.names.get(client, client)
        for row in model_rows(server_round, client, metrics):
            self._round.append(row)
            self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def add_local(self, server_round: int, client: str, metrics: Mapping[str, Any]) -> None:
        """Write a local-only model's evaluation of ``client`` and keep its accuracy.

        ``metrics`` are those of an evaluate reply (``eval_loss``, ``eval_accuracy``, ...).
        """
        local, client = _prefix(keys.MODEL_LOCAL), self.names.get(client, client)
        metrics = {(local + k if k.startswith("eval_") else k): v for k, v in metrics.items()}
        for row in model_rows(server_round, client, metrics):
            self.local[client] = float(row.get("accuracy", float("nan")))
            self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def round_report(self) -> dict[str, Any]:
        """The spread of accuracy over the clients evaluated since the last call, per model.

        Fields ``client_accuracy_{mean,worst,p10,std}`` (global model) and
        ``personal_client_accuracy_...`` (personal models) of the round's metrics row.
        """
        if not self._round:
            return {}
        report: dict[str, Any] = {}
        for model in (keys.MODEL_GLOBAL, keys.MODEL_PERSONAL):
            rows = [r for r in self._round if r["model"] == model and "accuracy" in r]
            for stat, value in spread(r["accuracy"] for r in rows).items():
                if stat != "clients":
                    report[f"{_prefix(model)}client_accuracy_{stat}"] = value
        self.final, self._round = self._round, []
        return report

    def sites(self) -> list[dict[str, Any]]:
        """The final round's table: one entry per site, accuracy of each model and the gain."""
        table: dict[str, dict[str, Any]] = {}
        for row in self.final:
            site = table.setdefault(
                row["client"], {"client": row["client"], "num_examples": row["num_examples"]}
            )
            site[f"{_prefix(row['model'])}accuracy"] = row.get("accuracy")
        for name, accuracy in self.local.items():
            table.setdefault(name, {"client": name})["local_accuracy"] = accuracy
        for site in table.values():
            joined = site.get("personal_accuracy", site.get("accuracy"))
            if joined is not None and site.get("local_accuracy") is not None:
                site["gain"] = float(joined) - float(site["local_accuracy"])
        return sorted(table.values(), key=_site_order)

    def run_report(self) -> dict[str, Any]:
        """``results.json``'s ``per_client`` block; closes the file and draws the plot."""
        self._file.close()
        sites = self.sites()
        block: dict[str, Any] = {"round": self.final[0]["round"] if self.final else None}
        for model in MODELS:
            name = f"{_prefix(model)}accuracy"
            values = [s[name] for s in sites if s.get(name) is not None]
            if values:
                block[model] = spread(values)
        gains = [s["gain"] for s in sites if "gain" in s]
        if gains:
            block["gain"] = {
                **spread(gains),
                "sites_gaining": sum(g > 0 for g in gains),
                "sites_losing": sum(g < 0 for g in gains),
            }
        block["sites"] = sites
        if self.plots and sites:
            plot_sites(sites, self.output_dir / PLOT_FILE)
        return {"per_client": block}

    def state_dict(self) -> dict[str, Any]:
        """Where the file ends and the final round's rows (for a checkpoint)."""
        self._file.flush()
        return {"offset": self._file.tell(), "final": self.final, "local": self.local}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Keep the checkpointed rows of a resumed run's file and drop those written after."""
        self._file.close()
        path = self.output_dir / PER_CLIENT_FILE
        with path.open("r+b") as f:
            f.truncate(int(state["offset"]))
        self._file = path.open("a", encoding="utf-8")
        self.final = list(state["final"])
        self.local = dict(state["local"])
        self._round = []


def _site_order(site: Mapping[str, Any]) -> tuple[int, str]:
    name = str(site["client"])
    return (int(name), "") if name.isdigit() else (1 << 62, name)


def plot_sites(sites: list[dict[str, Any]], path: Path) -> None:
    """A bar per site and model: the final round's accuracy (and the local-only one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(s["client"]) for s in sites]
    series = [(m, f"{_prefix(m)}accuracy") for m in MODELS]
    series = [(m, k) for m, k in series if any(s.get(k) is not None for s in sites)]
    width = 0.8 / max(1, len(series))
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(names) * len(series)), 4))
    for i, (model, key) in enumerate(series):
        values = [float(s.get(key) or 0.0) for s in sites]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=f"{model} model")
    ax.set_xticks(x, names, rotation=90 if len(names) > 20 else 0)
    ax.set_xlabel("client")
    ax.set_ylabel("accuracy (final round)")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def per_client_lines(block: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The run summary's lines for a ``per_client`` block: worst / mean per model, the gains."""
    if not block:
        return []
    lines = []
    for model in MODELS:
        stats = block.get(model)
        if stats:
            lines.append(
                (
                    f"per-client accuracy ({model}): worst / mean",
                    f"{stats['worst']:.4f} / {stats['mean']:.4f} ({stats['clients']} clients)",
                )
            )
    gain = block.get("gain")
    if gain:
        lines.append(
            (
                "gain from joining: worst / mean",
                f"{gain['worst']:+.4f} / {gain['mean']:+.4f}; "
                f"{gain['sites_gaining']} of {gain['clients']} sites gain",
            )
        )
    return lines
