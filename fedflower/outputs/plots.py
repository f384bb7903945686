"""The plot sink: ``history.png``, loss and accuracy per round."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
