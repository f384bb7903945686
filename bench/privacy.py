"""Privacy-utility trade-off of DP-FedAvg, and the cost of SecAgg+, on the hospitals task.

Every number comes from fedflower runs in this process (local engine, seed 0):

* **cross-silo**: 10 hospitals, all of them in every round (``privacy=dp_server``, fixed
  sampling, no amplification), three noise multipliers ``z`` and a run without DP;
* **cross-device**: 1,000 simulated clients (20 patients each) with Poisson sampling at rates
  ``q`` (each client takes part in a round with probability ``q``), three noise multipliers;
* **SecAgg+**: 10 hospitals, FedAvg with and without ``secagg=secaggplus`` (and with
  ``privacy=dp_client``): bytes and seconds per round, and the accuracy difference the
  quantization makes.

Epsilon is at delta = 1e-5, client-level (add/remove one client's data), from the run's own
accountant. McMahan et al., "Learning Differentially Private Recurrent Language Models",
arXiv:1710.06963; Bell et al., SecAgg+, eprint 2020/704.

Usage::

    python bench/privacy.py                    # the full benchmark (about 30 min on 2 busy cores)
    python bench/privacy.py --rounds 3 --silo-rounds 3 --noise 1.0 --rates 0.05  # smoke
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TQDM_DISABLE", "1")


def parse() -> argparse.Namespace:
    """The command line, parsed before TensorFlow is imported: ``--help`` is instant."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--noise", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    p.add_argument("--rates", type=float, nargs="+", default=[0.02, 0.1])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5, help="cross-device rounds")
    p.add_argument("--silo-rounds", type=int, default=5, help="cross-silo rounds")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--no-secagg", action="store_true", help="skip the SecAgg+ cost runs")
    return p.parse_args()


ARGS = parse() if __name__ == "__main__" else None

from fedflower.backend import quiet_tensorflow_import

quiet_tensorflow_import()

from hydra import compose, initialize_config_module

from fedflower.experiment import run
from fedflower.outputs import RunDir

RESULTS = Path(__file__).resolve().parent / "results"
COMMON = ["progress=false", "output.save_model=false", "output.plots=false", "latency=none"]


def run_once(overrides: list[str]) -> dict[str, Any]:
    """One run's ``results.json`` content plus its per-round rows."""
    with initialize_config_module(config_module="fedflower.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*COMMON, *overrides])
    with tempfile.TemporaryDirectory() as out, redirect_stdout(io.StringIO()):
        results = run(cfg, output_dir=out)
        rows = RunDir(Path(out)).metrics()
    return {**results, "rows": rows}


def row(setting: str, z: float | None, q: float, res: dict[str, Any]) -> dict[str, Any]:
    """One line of the trade-off table."""
    privacy = res.get("privacy", {})
    return {
        "setting": setting,
        "noise_multiplier": z,
        "sampling_rate": q,
        "rounds": res["totals"]["rounds"],
        "epsilon": privacy.get("epsilon"),
        "accuracy": res["final"]["accuracy"],
        "best_accuracy": max(r["accuracy"] for r in res["rows"]),
    }


def cross_silo(args: argparse.Namespace) -> list[dict[str, Any]]:
    """10 hospitals, full participation."""
    base = ["num_clients=10", f"num_rounds={args.silo_rounds}", "strategy.fraction_evaluate=0.0"]
    rows = [row("10 sites", None, 1.0, run_once(base))]
    for z in args.noise:
        dp = [
            "privacy=dp_server",
            f"privacy.noise_multiplier={z}",
            f"privacy.clipping_norm={args.clip}",
        ]
        rows.append(row("10 sites", z, 1.0, run_once([*base, *dp])))
        print(rows[-1], flush=True)
    return rows


def cross_device(args: argparse.Namespace) -> list[dict[str, Any]]:
    """1,000 clients, Poisson sampling at each rate."""
    base = [
        f"num_clients={args.clients}",
        "dataset.patients_per_hospital=20",
        "dataset.test_patients_per_hospital=2",
        f"num_rounds={args.rounds}",
        "strategy.fraction_evaluate=0.0",
        "strategy.min_available_nodes=1",
    ]
    rows = []
    for q in args.rates:
        for z in args.noise:
            dp = [
                "privacy=dp_server",
                f"privacy.noise_multiplier={z}",
                f"privacy.clipping_norm={args.clip}",
                "privacy.sampling=poisson",
                f"privacy.sampling_rate={q}",
            ]
            rows.append(row(f"{args.clients} clients", z, q, run_once([*base, *dp])))
            print(rows[-1], flush=True)
    return rows


def secagg_cost(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Bytes and seconds per round of SecAgg+ against plain FedAvg, 10 hospitals."""
    base = ["num_clients=10", f"num_rounds={args.silo_rounds}", "strategy.fraction_evaluate=0.0"]
    variants = {
        "FedAvg": [],
        "FedAvg + SecAgg+": ["secagg=secaggplus"],
        "FedAvg + SecAgg+ + dp_client": [
            "secagg=secaggplus",
            "privacy=dp_client",
            f"privacy.clipping_norm={args.clip}",
        ],
    }
    out = []
    for name, extra in variants.items():
        res = run_once([*base, *extra])
        n = res["totals"]["rounds"]
        out.append(
            {
                "variant": name,
                "bytes_down_per_round": res["totals"]["bytes_down"] / n,
                "bytes_up_per_round": res["totals"]["bytes_up"] / n,
                "seconds_per_round": sum(r["seconds"] for r in res["rows"]) / n,
                "accuracy": res["final"]["accuracy"],
            }
        )
    plain = out[0]
    for r in out:
        r["bytes_ratio"] = (r["bytes_down_per_round"] + r["bytes_up_per_round"]) / (
            plain["bytes_down_per_round"] + plain["bytes_up_per_round"]
        )
        r["seconds_ratio"] = r["seconds_per_round"] / plain["seconds_per_round"]
        r["accuracy_difference"] = r["accuracy"] - plain["accuracy"]
        print(r, flush=True)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of ``rows``."""
    cols = list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against epsilon, one line per setting and sampling rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        label = r["setting"] + ("" if r["sampling_rate"] == 1.0 else f", q={r['sampling_rate']}")
        groups.setdefault(label, []).append(r)
    for label, rs in groups.items():
        dp = sorted((r for r in rs if r["epsilon"] is not None), key=lambda r: r["epsilon"])
        ax.plot([r["epsilon"] for r in dp], [r["accuracy"] for r in dp], marker="o", label=label)
        for r in rs:
            if r["epsilon"] is None:
                ax.axhline(r["accuracy"], ls="--", color="grey", label=f"{label}, no DP")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon (delta = 1e-5, client-level)")
    ax.set_ylabel("final test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    """Run the benchmark and write ``bench/results/privacy.{csv,json,md,png}``."""
    args = ARGS or parse()
    RESULTS.mkdir(exist_ok=True)
    rows = cross_silo(args) + cross_device(args)
    cost = [] if args.no_secagg else secagg_cost(args)
    md = (
        "Machine: 2-core x86_64, shared with other jobs.\n\n"
        f"## Accuracy vs epsilon\n\n{table(rows)}\n"
        + (f"\n## SecAgg+ cost (10 sites)\n\n{table(cost)}\n" if cost else "")
    )
    print(md)
    (RESULTS / "privacy.md").write_text(md)
    (RESULTS / "privacy.json").write_text(json.dumps({"tradeoff": rows, "secagg": cost}, indent=1))
    cols = list(rows[0])
    csv = [",".join(cols)] + [
        ",".join("" if r[c] is None else str(r[c]) for c in cols) for r in rows
    ]
    (RESULTS / "privacy.csv").write_text("\n".join(csv) + "\n")
    plot(rows, RESULTS / "privacy.png")


if __name__ == "__main__":
    main()
