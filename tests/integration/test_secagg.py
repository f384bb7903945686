"""SecAgg+ on the local engine: the secure aggregate is FedAvg's within its quantization bound."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fedflower.strategies.fedavg import FedAvg
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

from fedflower import keys
from fedflower.client.app import to_client_app
from fedflower.client.privacy import privacy_mod
from fedflower.client.secagg import secagg_mod
from fedflower.engine.local import run_local
from fedflower.server.privacy import make_private
from fedflower.wire import named_record

NODES = 3
ROUNDS = 3
SHAPES = [(20, 8), (8,)]
NAMES = ["dense/kernel", "dense/bias"]
SECAGG = {
    "name": "secaggplus",
    "num_shares": 1.0,
    "reconstruction_threshold": 0.67,
    "max_weight": 1000.0,
    "clipping_range": 8.0,
    "quantization_range": 2**22,
    "modulus_range": 2**32,
}


class FixedStepClient:
    """A client whose update is a fixed function of its id: no training, no TensorFlow."""

    def __init__(self, cid: int) -> None:
        self.cid = cid
        self.rng = np.random.default_rng(100 + cid)

    def receive(self, record: ArrayRecord, what: str = "") -> list[np.ndarray]:
        assert list(record.keys()) == NAMES  # the names travel through SecAgg+'s legacy layout
        return record.to_numpy_ndarrays()

    def send(self, arrays: list[np.ndarray], received: ArrayRecord) -> ArrayRecord:
        return named_record(list(received.keys()), arrays)

    def fit(self, parameters: list[np.ndarray], config: Any) -> tuple[list[np.ndarray], int, dict]:
        step = [0.1 * self.rng.standard_normal(p.shape).astype(p.dtype) for p in parameters]
        return [p + s for p, s in zip(parameters, step, strict=True)], 100 * (self.cid + 1), {}

    def evaluate(self, parameters: list[np.ndarray], config: Any) -> tuple[float, int, dict]:
        return 0.0, 1, {}


def models_per_round(wrap: Callable[[Strategy], Strategy], secagg: dict[str, Any]) -> list:
    """The global model after every round, with the client mods of ``secagg``."""
    initial = [np.full(s, 0.5, np.float32) for s in SHAPES]
    models: list[list[np.ndarray]] = []
    clients = {}

    def client_fn(context: Context) -> FixedStepClient:
        cid = int(context.node_config[keys.PARTITION_ID])
        return clients.setdefault(cid, FixedStepClient(cid))  # type: ignore[return-value]

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = wrap(FedAvg(fraction_evaluate=0.0, min_available_nodes=NODES))

        def keep(server_round: int, arrays: ArrayRecord) -> None:
            if server_round:
                models.append(arrays.to_numpy_ndarrays())

        strategy.start(grid, named_record(NAMES, initial), num_rounds=ROUNDS, evaluate_fn=keep)  # type: ignore[arg-type]

    mods = [secagg_mod(lambda _: secagg), privacy_mod(lambda _: {"name": "none"})]
    run_local(app, to_client_app(client_fn, mods=mods), NODES)  # type: ignore[arg-type]
    return models


@pytest.mark.slow
def test_secaggplus_equals_fedavg_within_quantization_bound() -> None:
    plain = models_per_round(lambda s: s, {"name": "none"})
    secure = models_per_round(lambda s: make_private(s, {"name": "none"}, NODES, 0, SECAGG), SECAGG)
    assert len(plain) == len(secure) == ROUNDS
    q = SECAGG["quantization_range"]
    ratios = sum(100 * (i + 1) / SECAGG["max_weight"] for i in range(NODES))
    # stochastic rounding of each weighted value (< 1 step of 2 * range / q) and of each
    # client's weight (< 1/q, times values within +-range), over the total weight, per round
    per_round = NODES * (2 * SECAGG["clipping_range"] / q + SECAGG["clipping_range"] / q) / ratios
    errors = []
    for r, (p, s) in enumerate(zip(plain, secure, strict=True), start=1):
        error = max(float(np.max(np.abs(a - b))) for a, b in zip(p, s, strict=True))
        errors.append(error)
        assert error <= r * per_round + 1e-6  # float32 rounding of values near 1
    assert max(errors) > 0  # the secure path quantized (it is not the plain mean)
