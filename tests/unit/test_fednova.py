"""FedNova (arXiv:2007.07481, eq. 6-7) on hand-computed numbers; equal steps are FedAvg."""

from __future__ import annotations

import numpy as np
import pytest
from fedflower.strategies.fednova import FedNova

from fedflower.aggregation import weighted_mean
from fedflower.aggregation.normalized import normalized_average


def test_the_papers_update_rule_on_hand_computed_numbers() -> None:
    # x = 1; client A: x_A = 0 after 1 step, 1 example; client B: x_B = -3 after 3 steps, 3.
    # p = (1/4, 3/4); d_A = 1, d_B = 4/3; tau_eff = 1/4 + 9/4 = 2.5; x - 2.5 * (1/4 + 1) = -2.125
    strategy = FedNova()
    strategy._reference, strategy._epochs, strategy._batch_size = [np.array([1.0])], 1, 1
    new = strategy.combine([([np.array([0.0])], 1.0), ([np.array([-3.0])], 3.0)])
    assert new[0][0] == pytest.approx(-2.125)
    # FedAvg would give 1/4 * 0 + 3/4 * -3 = -2.25: the client with more steps pulls harder


def test_steps_are_epochs_times_batches() -> None:
    strategy = FedNova()
    strategy._epochs, strategy._batch_size = 2, 32
    assert [strategy.local_steps(n) for n in (1, 32, 33, 200)] == [2, 2, 4, 14]


def test_equal_steps_equal_fedavg_in_every_round() -> None:
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    for _ in range(4):  # several rounds, each from the last one's model
        updates = [([a + rng.normal(size=a.shape).astype(np.float32) for a in x], float(n))
                   for n in (10, 30, 60)]  # fmt: skip
        nova = normalized_average(x, updates, steps=[5, 5, 5])
        avg = weighted_mean(updates)
        for a, b in zip(nova, avg, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        x = avg
