"""How heterogeneous a partition is: label entropy and sizes per client, and their plot.

The label entropy of a client is ``H = -sum_c p_c log2 p_c`` over its label shares: an IID
client's entropy is close to the pool's, a single-class client's is 0. Hsieh et al. 2020
(arXiv:1910.00189) and Li et al. 2022 (arXiv:2102.02079) measure label skew this way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedflower.data.partition import FederatedData


def label_entropy(counts: np.ndarray) -> float:
    """Entropy in bits of the label distribution given by ``counts`` (0 for an empty client)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def heterogeneity(clients: list[dict[str, Any]]) -> dict[str, float]:
    """Summary statistics of per-client rows as ``FederatedData.summary`` gives them.

    Returns the mean per-client label entropy (bits), the entropy of the pooled labels (what an
    IID split approaches), the mean number of classes per client, and the client sizes'
    minimum, median and maximum (training + validation rows).
    """
    counts = np.array([c["label_counts"] for c in clients], dtype=np.int64)
    sizes = counts.sum(axis=1)
    return {
        "mean_label_entropy_bits": float(np.mean([label_entropy(c) for c in counts])),
        "pool_label_entropy_bits": label_entropy(counts.sum(axis=0)),
        "mean_classes_per_client": float((counts > 0).sum(axis=1).mean()),
        "size_min": int(sizes.min()),
        "size_median": float(np.median(sizes)),
        "size_max": int(sizes.max()),
    }


def summary_line(name: str, num_clients: int, stats: dict[str, float]) -> str:
    """One line for the console: ``partition <name>: ... entropy ... sizes min/median/max``."""
    return (
        f"partition {name}: {num_clients} clients, label entropy "
        f"{stats['mean_label_entropy_bits']:.2f} bits per client "
        f"(pool {stats['pool_label_entropy_bits']:.2f}), "
        f"{stats['mean_classes_per_client']:.1f} classes per client, "
        f"sizes min/median/max {stats['size_min']}/{stats['size_median']:g}/{stats['size_max']}"
    )


def plot_label_distribution(partitioner: Any, path: Path, max_clients: int = 50) -> None:
    """Save flwr-datasets' per-client label distribution bar plot of ``partitioner`` as ``path``.

    At most ``max_clients`` clients are drawn (the first ones) so that the plot stays readable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from flwr_datasets.visualization import plot_label_distributions

    fig, _, _ = plot_label_distributions(
        partitioner,
        label_name="label",
        plot_type="bar",
        size_unit="absolute",
        max_num_partitions=min(max_clients, partitioner.num_partitions),
        legend=True,
        legend_title="label",
        verbose_labels=False,
        title=f"Label distribution per client ({type(partitioner).__name__})",
    )
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_partition_report(fed: FederatedData, out: Path, plot: bool = True) -> str:
    """Write ``partition.json`` (and ``partition.png`` when ``plot``); return the summary line.

    ``partition.json`` holds the partitioner's name, :func:`heterogeneity`'s statistics and
    every client's sizes and label counts.
    """
    clients = fed.summary()
    stats = heterogeneity(clients)
    name = type(fed.partitioner).__name__
    record = {
        "partitioner": name,
        "num_clients": fed.num_clients,
        "heterogeneity": stats,
        "clients": clients,
    }
    (out / "partition.json").write_text(json.dumps(record, indent=1) + "\n")
    if plot:
        plot_label_distribution(fed.partitioner, out / "partition.png")
    return summary_line(name, fed.num_clients, stats)
