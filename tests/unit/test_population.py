"""fedflower.data.population: generated hospitals, materialised per client, memory flat in N."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fedflower.data.population import HospitalPopulation
from fedflower.errors import ConfigError


def test_client_data_shapes_and_validation_split() -> None:
    pop = HospitalPopulation(num_clients=20, patients_per_client=50, val_fraction=0.2)
    data = pop.client(7)
    assert data.x_train.shape == (40, 20) and data.x_val.shape == (10, 20)
    assert data.x_train.dtype == np.float32 and set(np.unique(data.y_train)) <= {0, 1}
    assert pop.source.x_test.shape == (100 * 50, 20)
    assert pop.summary()["train_per_client"] == 40


def test_a_client_is_the_same_whichever_clients_came_before() -> None:
    a, b = HospitalPopulation(num_clients=1000), HospitalPopulation(num_clients=1000)
    for cid in (3, 999, 0, 500):
        b.client(cid)
    np.testing.assert_array_equal(a.client(500).x_train, b.client(500).x_train)
    np.testing.assert_array_equal(a.client(500).y_val, b.client(500).y_val)


def test_clients_are_different_hospitals() -> None:
    pop = HospitalPopulation(num_clients=50, patients_per_client=400, case_mix=1.0)
    means = np.array([pop.client(c).x_train.mean(axis=0) for c in range(50)])
    # each hospital has its own centre (sd 1.0): their feature means spread well beyond sampling
    # noise (sd about 1/sqrt(320) = 0.06)
    assert means.std(axis=0).min() > 0.5


def test_test_hospitals_are_not_clients() -> None:
    pop = HospitalPopulation(num_clients=5, test_hospitals=5, test_patients_per_hospital=50)
    for cid in range(5):
        assert not np.any(np.isin(pop.client(cid).x_train[:, 0], pop.source.x_test[:, 0]))


def test_population_size_costs_no_memory() -> None:
    def allocated(num_clients: int) -> int:
        tracemalloc.start()
        pop = HospitalPopulation(num_clients=num_clients)
        pop.client(num_clients - 1)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak

    small, large = allocated(10), allocated(1_000_000)
    assert large < 1.05 * small + 4096


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_clients": 0}, "num_clients must be an integer >= 1"),
        ({"num_clients": 3, "patients_per_client": 1}, "patients_per_client must be"),
        ({"num_clients": 3, "val_fraction": 1.0}, r"val_fraction must be a number in \[0, 1\)"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HospitalPopulation(**kwargs)


def test_unknown_client_id() -> None:
    with pytest.raises(ConfigError, match=r"client id must be an integer in \[0, 2\], got 3"):
        HospitalPopulation(num_clients=3).client(3)
