"""Synthetic(alpha, beta) of the FedProx paper and the experiment that uses it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig

from fedflower.data import fedprox_synthetic
from fedflower.errors import DataError


@pytest.fixture(scope="module")
def synthetic() -> fedprox_synthetic.TabularSource:
    return fedprox_synthetic.load(alpha=1.0, beta=1.0, seed=0)


def test_paper_dimensions_and_per_device_90_10_split(synthetic) -> None:
    assert synthetic.x.shape[1] == 60 and synthetic.num_classes == 10
    assert synthetic.x.dtype == np.float32 and synthetic.y.dtype == np.int64
    train = np.bincount(synthetic.groups, minlength=30)
    assert len(train) == 30 and train.min() > 0
    # each device has int(0.9 n) training examples out of n >= 50, the rest is test data
    total = len(synthetic.y) + len(synthetic.y_test)
    assert np.all(train >= 45)
    sizes = np.ceil(train / 0.9)  # n lies in [train / 0.9, (train + 1) / 0.9)
    assert abs(total - sizes.sum()) <= 30
    assert len(synthetic.y_test) == pytest.approx(total / 10, abs=30)


def test_device_sizes_are_lognormal_4_2_plus_50() -> None:
    sizes = fedprox_synthetic.device_sizes(np.random.default_rng(0), 20000)
    logs = np.log(sizes - 49)  # int() truncation: sizes - 50 + ~0.5
    assert sizes.min() >= 50
    assert np.median(logs) == pytest.approx(4.0, abs=0.1)
    assert np.std(logs) == pytest.approx(2.0, abs=0.15)


def test_same_seed_same_data_other_seed_other_data(synthetic) -> None:
    again = fedprox_synthetic.load(alpha=1.0, beta=1.0, seed=0)
    np.testing.assert_array_equal(again.x, synthetic.x)
    np.testing.assert_array_equal(again.y_test, synthetic.y_test)
    other = fedprox_synthetic.load(alpha=1.0, beta=1.0, seed=1)
    assert other.x.shape != synthetic.x.shape or not np.array_equal(other.x, synthetic.x)


def test_feature_covariance_is_diagonal_j_to_minus_1_2(synthetic) -> None:
    centered = np.concatenate(
        [
            synthetic.x[synthetic.groups == k] - synthetic.x[synthetic.groups == k].mean(0)
            for k in range(30)
        ]
    )
    var = centered.var(axis=0)
    want = np.arange(1, 61) ** -1.2
    np.testing.assert_allclose(var, want, rtol=0.15)
    corr = np.corrcoef(centered[:, :5].T)
    assert np.max(np.abs(corr - np.eye(5))) < 0.1


def device_feature_means(source) -> np.ndarray:
    return np.stack([source.x[source.groups == k].mean(0) for k in range(30)])


def label_spread(source) -> float:
    """Mean total-variation distance between each device's label histogram and the pooled one."""
    pooled = np.bincount(source.y, minlength=10) / len(source.y)
    tv = [
        0.5
        * np.abs(
            np.bincount(source.y[source.groups == k], minlength=10) / np.sum(source.groups == k)
            - pooled
        ).sum()
        for k in range(30)
    ]
    return float(np.mean(tv))


def test_beta_shifts_features_and_alpha_beta_skew_labels(synthetic) -> None:
    iid = fedprox_synthetic.load(iid=True, seed=0)
    none = fedprox_synthetic.load(alpha=0.0, beta=0.0, seed=0)
    # Synthetic-IID: every device's features are centred at 0; with beta = 0 each device still
    # has its own v_k ~ N(0, 1); with beta = 1 the device means B_k ~ N(0, 1) add spread.
    assert np.abs(device_feature_means(iid)).mean() < 0.2
    spread = lambda s: device_feature_means(s).mean(axis=1).std()  # noqa: E731
    assert spread(synthetic) > 2 * spread(none)
    # label skew grows from IID (one shared model) to Synthetic(1, 1)
    assert label_spread(iid) < 0.15 < label_spread(synthetic)


@pytest.mark.parametrize(
    "kwargs", [{"alpha": -1.0}, {"num_devices": 0}, {"num_classes": 1}, {"train_fraction": 1.0}]
)
def test_bad_arguments_are_data_errors(kwargs: dict) -> None:
    with pytest.raises(DataError, match=r"^dataset\.\w+ must be"):
        fedprox_synthetic.load(**kwargs)


def test_experiment_sets_the_papers_settings(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg(["experiment=fedprox_synthetic", "strategy=fedprox"])
    assert cfg.num_clients == 30
    assert cfg.client.learning_rate == 0.01
    assert cfg.client.batch_size == 10
    assert cfg.client.local_epochs == 20
    assert cfg.client.optimizer._target_ == "keras.optimizers.SGD"
    assert int(cfg.num_clients * cfg.strategy.fraction_train) == 10
    assert cfg.model._target_ == "fedflower.models.logreg"
    source = instantiate(cfg.dataset)
    assert len(np.unique(source.groups)) == 30
    partition = instantiate(cfg.partition)
    assert partition is not None
