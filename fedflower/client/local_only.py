"""The local-only baseline: what each site reaches training alone, with the same budget.

A site weighs joining a federation against training on its own data only. ``baseline=local``
trains a copy of the initial global model on each site's training split for as many epochs as
the site trains in the whole federated run (``local_epochs x num_rounds``), with the same
optimizer, batch size and learning rate, and evaluates it on the same validation split the
federated evaluation uses. Its rows are ``model = local`` in ``per_client.jsonl``; each site's
gain from joining (personal or global accuracy minus local-only) is in ``results.json``.
pfl-research and FL4Health report the same baseline ("local" / "local-only" training).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from fedflower import keys
from fedflower.checks import check_choice
from fedflower.client.keras_client import KerasClient
from fedflower.data.source import ClientData

BASELINES = ("none", "local")


def wants_local_baseline(value: str | None) -> bool:
    """Whether ``baseline`` asks for the local-only baseline (``none`` or ``local``)."""
    check_choice("baseline", value or "none", BASELINES)
    return value == "local"


def local_only(
    model: keras.Model,
    client_data: Callable[[int], ClientData],
    num_clients: int,
    client_options: dict[str, Any],
    num_rounds: int,
    seed: int,
) -> Iterator[tuple[int, dict[str, float]]]:
    """Train each site alone from ``model``'s weights; yield ``(cid, evaluate metrics)``.

    The metrics are those of a federated evaluation reply (``eval_loss``, ``eval_accuracy``,
    ``num-examples``). ``model``'s weights are restored afterwards.
    """
    initial = [np.array(w) for w in model.get_weights()]
    config = {
        keys.LOCAL_EPOCHS: int(client_options["local_epochs"]) * num_rounds,
        keys.BATCH_SIZE: int(client_options["batch_size"]),
        keys.LEARNING_RATE: float(client_options["learning_rate"]),
    }
    try:
        for cid in range(num_clients):
            client = KerasClient(model, client_data(cid), cid=cid, seed=seed)
            weights, _, _ = client.fit(initial, config)
            loss, n, metrics = client.evaluate(weights, {})
            yield cid, {keys.EVAL_LOSS: loss, **metrics, keys.NUM_EXAMPLES: n}
    finally:
        model.set_weights(initial)
