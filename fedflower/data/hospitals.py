"""Synthetic patient records of several hospitals: the default experiment's data.

Each patient has ``num_features`` standardized measurements. Whether a patient has the
diagnosis follows one shared, non-linear rule (the same disease everywhere). Hospitals differ
the way real ones do, so the federation is not IID:

* case mix: each hospital's patients are drawn around its own centre, so some hospitals see
  sicker patients and a higher prevalence than others;
* feature shift: each hospital's lab devices add their own calibration offset to a few
  measurements;
* spread: each hospital's population is wider or narrower.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the same data.
"""

from __future__ import annotations

import numpy as np

from fedflower.checks import check_number
from fedflower.data.source import TabularSource
from fedflower.errors import DataError

NUM_LAB_FEATURES = 4
"""The first features are lab values whose calibration differs between hospitals."""


def _diagnosis_score(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The disease's true risk score, shared by every hospital (linear + interactions)."""
    linear = x @ w
    interactions = 1.2 * x[:, 0] * x[:, 1] - 0.8 * (x[:, 2] ** 2 - 1.0) + 0.9 * np.tanh(2 * x[:, 3])
    return linear + interactions


def risk_weights(rng: np.random.Generator, num_features: int) -> np.ndarray:
    """The linear part of the disease's risk score (about 60% of the features matter)."""
    w = rng.normal(0.0, 1.0, num_features) * (rng.random(num_features) < 0.6)
    return w * (2.0 / max(float(np.linalg.norm(w)), 1e-9))


def patients(
    rng: np.random.Generator,
    n: int,
    w: np.ndarray,
    case_mix: float,
    feature_shift: float,
    noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one hospital (centre, spread, lab offsets) and ``n`` of its patients."""
    num_features = len(w)
    centre = case_mix * rng.standard_normal(num_features)
    spread = float(rng.uniform(0.8, 1.2))
    offset = np.zeros(num_features)
    offset[:NUM_LAB_FEATURES] = feature_shift * rng.standard_normal(NUM_LAB_FEATURES)
    x = centre + spread * rng.standard_normal((n, num_features))
    score = _diagnosis_score(x, w) + noise * rng.logistic(size=n)
    y = (score > 0).astype(np.int64)
    observed = x + offset
    return observed.astype(np.float32), y


def load(
    num_hospitals: int = 10,
    patients_per_hospital: int = 1000,
    test_patients_per_hospital: int = 200,
    num_features: int = 20,
    case_mix: float = 0.5,
    feature_shift: float = 0.3,
    label_noise: float = 0.25,
    seed: int = 0,
) -> TabularSource:
    """Generate the hospitals' patient records and a pooled central test set.

    Parameters
    ----------
    num_hospitals : int
        Number of hospitals; each is one client under ``partition=natural``/``auto``.
    patients_per_hospital : int
        Patients per hospital available for local training and validation.
    test_patients_per_hospital : int
        Patients per hospital held out into the central test set.
    num_features : int
        Measurements per patient (at least 4).
    case_mix : float
        Standard deviation of the hospitals' population centres (0 gives identical populations).
    feature_shift : float
        Standard deviation of each hospital's calibration offset on the lab features.
    label_noise : float
        Scale of the logistic noise on the risk score (higher gives a harder task).
    seed : int
        Seed of the generator.

    Returns
    -------
    TabularSource
        With ``groups`` set to the hospital of each training row.
    """
    for key, value, least in (
        ("num_hospitals", num_hospitals, 1),
        ("patients_per_hospital", patients_per_hospital, 2),
        ("test_patients_per_hospital", test_patients_per_hospital, 1),
        ("num_features", num_features, NUM_LAB_FEATURES),
    ):
        check_number(f"dataset.{key}", value, minimum=least, integer=True, error=DataError)
    rng = np.random.default_rng(seed)
    w = risk_weights(rng, num_features)
    xs, ys, gs, xt, yt = [], [], [], [], []
    for h in range(num_hospitals):
        n = patients_per_hospital + test_patients_per_hospital
        x, y = patients(rng, n, w, case_mix, feature_shift, label_noise)
        xs.append(x[:patients_per_hospital])
        ys.append(y[:patients_per_hospital])
        gs.append(np.full(patients_per_hospital, h, dtype=np.int64))
        xt.append(x[patients_per_hospital:])
        yt.append(y[patients_per_hospital:])
    return TabularSource(
        name="hospitals",
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        x_test=np.concatenate(xt),
        y_test=np.concatenate(yt),
        num_classes=2,
        groups=np.concatenate(gs),
    )
