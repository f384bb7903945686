"""A population of many generated hospitals whose records exist only while a client trains.

Cross-device federations have tens of thousands of clients of which a round samples a few
hundred (Bonawitz et al. 2019, "Towards Federated Learning at Scale", arXiv:1902.01046). The
``hospitals`` dataset generates every hospital up front, so its memory grows with the number of
clients. A :class:`HospitalPopulation` draws client ``i``'s records from a generator seeded with
``(seed, i)`` each time the client is asked for them and keeps nothing: memory is flat in the
number of clients, and a client's data do not depend on which clients ran before. Each hospital
is drawn as in :mod:`fedflower.data.hospitals` (its own case mix, spread and lab calibration,
one shared disease), so the federation is non-IID by hospital.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedflower.checks import check_number
from fedflower.data.hospitals import patients, risk_weights
from fedflower.data.source import ClientData, TabularSource

TRAIN_STREAM, TEST_STREAM = 0, 1
"""Seed-sequence branches of the clients' hospitals and of the test hospitals."""


class HospitalPopulation:
    """``num_clients`` synthetic hospitals, each generated when its data are needed.

    Parameters
    ----------
    num_clients : int
        Number of hospitals (one per client).
    patients_per_client : int
        Records per hospital, split into local training and validation data.
    test_hospitals : int
        Hospitals (not among the clients) whose records form the central test set.
    test_patients_per_hospital : int
        Records per test hospital.
    num_features, case_mix, feature_shift, label_noise :
        As in :func:`fedflower.data.hospitals.load`.
    val_fraction : float
        Share of each hospital's records kept for local validation.
    seed : int
        Seed of the population (the data stay the same when the run's seed changes).
    """

    def __init__(
        self,
        num_clients: int,
        patients_per_client: int = 50,
        test_hospitals: int = 100,
        test_patients_per_hospital: int = 50,
        num_features: int = 20,
        case_mix: float = 0.5,
        feature_shift: float = 0.3,
        label_noise: float = 0.25,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        self.num_clients = check_number("num_clients", num_clients, minimum=1, integer=True)
        self.patients_per_client = check_number(
            "dataset.patients_per_client", patients_per_client, minimum=2, integer=True
        )
        check_number("dataset.test_hospitals", test_hospitals, minimum=1, integer=True)
        check_number("dataset.test_patients_per_hospital", test_patients_per_hospital, minimum=1)
        check_number("dataset.num_features", num_features, minimum=4, integer=True)
        self.val_fraction = check_number(
            "client.val_fraction", val_fraction, minimum=0.0, maximum=1.0, max_open=True
        )
        self.seed = seed
        self._shape = (case_mix, feature_shift, label_noise)
        self._w = risk_weights(np.random.default_rng(seed), num_features)
        test = [
            self._hospital(TEST_STREAM, h, test_patients_per_hospital)
            for h in range(test_hospitals)
        ]
        first = self.client(0)
        self.source = TabularSource(
            name="population",
            x=first.x_train,  # a sample of the population for shapes; never the whole pool
            y=first.y_train,
            x_test=np.concatenate([x for x, _ in test]),
            y_test=np.concatenate([y for _, y in test]),
            num_classes=2,
        )

    def _hospital(self, stream: int, index: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, stream, index])
        return patients(rng, n, self._w, *self._shape)

    @property
    def num_val(self) -> int:
        """Validation records per client (at least one when ``val_fraction > 0``)."""
        n = self.patients_per_client
        n_val = min(n - 1, round(n * self.val_fraction))
        return max(1, n_val) if self.val_fraction > 0 else 0

    def client(self, cid: int) -> ClientData:
        """Generate client ``cid``'s records: the first ``num_val`` are its validation split."""
        check_number("client id", cid, minimum=0, maximum=self.num_clients - 1, integer=True)
        x, y = self._hospital(TRAIN_STREAM, cid, self.patients_per_client)
        v = self.num_val
        return ClientData(x[v:], y[v:], x[:v], y[:v])

    def summary(self) -> dict[str, Any]:
        """What ``partition.json`` records: the population's size, not a row per client."""
        return {
            "population": self.source.name,
            "clients": self.num_clients,
            "train_per_client": self.patients_per_client - self.num_val,
            "val_per_client": self.num_val,
            "test_examples": len(self.source.y_test),
        }
