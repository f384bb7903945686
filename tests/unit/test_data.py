"""Datasets (synthetic hospitals, breast cancer) and their split across clients."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    NaturalIdPartitioner,
    Partitioner,
)
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fedflower.data import breast_cancer, hospitals
from fedflower.data.partition import AutoPartitioner, FederatedData
from fedflower.data.source import TabularSource
from fedflower.errors import DataError


@pytest.fixture(scope="module")
def small_hospitals() -> TabularSource:
    return hospitals.load(num_hospitals=5, patients_per_hospital=400, test_patients_per_hospital=50)


@pytest.fixture(scope="module")
def cancer() -> TabularSource:
    return breast_cancer.load()


# -- hospitals ----------------------------------------------------------------------------------
def test_hospitals_shapes_dtypes_and_groups() -> None:
    src = hospitals.load(
        num_hospitals=3, patients_per_hospital=50, test_patients_per_hospital=7, num_features=6
    )
    assert src.x.shape == (150, 6)
    assert src.x_test.shape == (21, 6)
    assert src.y.shape == (150,)
    assert src.y_test.shape == (21,)
    assert src.x.dtype == np.float32
    assert src.input_shape == (6,)
    assert src.num_classes == 2
    assert set(np.unique(src.y)) == {0, 1}
    assert src.groups is not None
    np.testing.assert_array_equal(src.groups, np.repeat([0, 1, 2], 50))


def test_hospitals_default_is_the_seeds_case() -> None:
    src = hospitals.load()
    assert src.x.shape == (10 * 1000, 20)
    assert src.x_test.shape == (10 * 200, 20)
    assert np.bincount(src.groups).tolist() == [1000] * 10


def test_hospitals_are_deterministic_by_seed() -> None:
    kw = {"num_hospitals": 3, "patients_per_hospital": 40, "test_patients_per_hospital": 10}
    a, b = hospitals.load(seed=4, **kw), hospitals.load(seed=4, **kw)
    c = hospitals.load(seed=5, **kw)
    for name in ("x", "y", "x_test", "y_test", "groups"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.allclose(a.x, c.x)


def _per_hospital(src: TabularSource, values: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    assert src.groups is not None
    return np.array([values(src.groups == h) for h in np.unique(src.groups)])


def test_hospitals_differ_in_prevalence_and_feature_means(small_hospitals: TabularSource) -> None:
    src = small_hospitals
    prevalence = _per_hospital(src, lambda m: src.y[m].mean())
    means = _per_hospital(src, lambda m: src.x[m].mean(axis=0))  # (hospitals, features)
    # sampling noise of a mean of 400 patients is ~0.025 (prevalence) and ~0.05 (features)
    assert prevalence.max() - prevalence.min() > 0.15
    assert np.all((prevalence > 0.02) & (prevalence < 0.98))  # both classes everywhere
    assert means.std(axis=0).mean() > 0.25


def test_identical_hospitals_without_case_mix_and_shift() -> None:
    """The non-IID knobs are what make hospitals differ: with both at 0 they do not."""
    src = hospitals.load(
        num_hospitals=5,
        patients_per_hospital=400,
        test_patients_per_hospital=10,
        case_mix=0.0,
        feature_shift=0.0,
    )
    prevalence = _per_hospital(src, lambda m: src.y[m].mean())
    means = _per_hospital(src, lambda m: src.x[m].mean(axis=0))
    assert prevalence.max() - prevalence.min() < 0.12
    assert means.std(axis=0).mean() < 0.1


def test_hospitals_feature_shift_moves_only_lab_features() -> None:
    kw = {"num_hospitals": 4, "patients_per_hospital": 300, "test_patients_per_hospital": 5}
    base = hospitals.load(feature_shift=0.0, **kw)
    shifted = hospitals.load(feature_shift=1.0, **kw)
    diff = shifted.x - base.x
    lab = hospitals.NUM_LAB_FEATURES
    assert np.abs(diff[:, lab:]).max() == 0.0
    assert np.abs(diff[:, :lab]).max() > 0.1


def test_hospitals_test_set_is_pooled_from_every_hospital(small_hospitals: TabularSource) -> None:
    assert len(small_hospitals.y_test) == 5 * 50
    assert 0.1 < small_hospitals.y_test.mean() < 0.9
    # no training row is repeated in the test set
    train_rows = {row.tobytes() for row in small_hospitals.x}
    assert not any(row.tobytes() in train_rows for row in small_hospitals.x_test)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_hospitals": 0},
        {"num_features": 3},
        {"patients_per_hospital": 1},
        {"test_patients_per_hospital": 0},
    ],
)
def test_hospitals_reject_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(DataError, match=r"^dataset\.\w+ must be an integer >= \d, got"):
        hospitals.load(**kwargs)


# -- breast cancer ------------------------------------------------------------------------------
def test_breast_cancer_sizes(cancer: TabularSource) -> None:
    assert len(cancer.y) + len(cancer.y_test) == 569
    assert len(cancer.y_test) == 114  # ceil(0.2 * 569), stratified
    assert cancer.input_shape == (30,)
    assert cancer.num_classes == 2
    assert cancer.groups is None
    assert abs(cancer.y.mean() - cancer.y_test.mean()) < 0.02  # stratified split


def test_breast_cancer_scaler_is_fitted_on_train_only(cancer: TabularSource) -> None:
    np.testing.assert_allclose(cancer.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(cancer.x.std(axis=0), 1.0, atol=1e-4)
    # the test split keeps its own (non-zero) offsets: nothing was fitted on it
    assert np.abs(cancer.x_test.mean(axis=0)).max() > 0.05
    assert np.abs(cancer.x_test.std(axis=0) - 1.0).max() > 0.05
    # and it is exactly the train split's scaler applied to the raw test rows
    x, y = load_breast_cancer(return_X_y=True)
    x_tr, x_te, _, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    scaler = StandardScaler().fit(x_tr)
    np.testing.assert_allclose(cancer.x_test, scaler.transform(x_te), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cancer.y_test, y_te)


def test_breast_cancer_split_depends_on_seed(cancer: TabularSource) -> None:
    other = breast_cancer.load(seed=1)
    assert len(other.y_test) == len(cancer.y_test)
    assert not np.array_equal(other.y_test, cancer.y_test) or not np.allclose(
        other.x_test, cancer.x_test
    )
    again = breast_cancer.load(seed=0)
    np.testing.assert_array_equal(again.x, cancer.x)


# -- FederatedData ------------------------------------------------------------------------------
def all_indices(fed: FederatedData) -> list[np.ndarray]:
    return [fed.indices(c) for c in range(fed.num_clients)]


def assert_disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n  # sizes add up ...
    assert len(np.unique(joined)) == n  # ... without overlap


PARTITIONS: dict[str, Callable[[int], Partitioner]] = {
    "auto": AutoPartitioner,
    "iid": IidPartitioner,
    "dirichlet": lambda n: DirichletPartitioner(
        n, partition_by="label", alpha=0.5, min_partition_size=10, self_balancing=True, seed=0
    ),
}


@pytest.mark.parametrize("kind", sorted(PARTITIONS))
@pytest.mark.parametrize("dataset", ["hospitals", "cancer"])
def test_partitions_cover_the_pool_disjointly(
    kind: str, dataset: str, small_hospitals: TabularSource, cancer: TabularSource
) -> None:
    src = small_hospitals if dataset == "hospitals" else cancer
    fed = FederatedData(src, PARTITIONS[kind](5), num_clients=5)
    parts = all_indices(fed)
    assert_disjoint_cover(parts, len(src.y))
    for cid, part in enumerate(parts):
        data = fed.client(cid)
        assert len(data.y_train) + len(data.y_val) == len(part)
        assert data.num_train == len(data.y_train)


def test_auto_uses_hospitals_as_clients(small_hospitals: TabularSource) -> None:
    fed = FederatedData(small_hospitals, AutoPartitioner(5), num_clients=5)
    assert small_hospitals.groups is not None
    for cid, part in enumerate(all_indices(fed)):
        assert len(part) == 400
        assert set(small_hospitals.groups[part]) == {cid}


def test_natural_partition_is_one_hospital_per_client(small_hospitals: TabularSource) -> None:
    fed = FederatedData(small_hospitals, NaturalIdPartitioner(partition_by="group"), 5)
    sizes = [len(p) for p in all_indices(fed)]
    assert sizes == [400] * 5
    groups = [set(small_hospitals.groups[p]) for p in all_indices(fed)]  # type: ignore[index]
    assert all(len(g) == 1 for g in groups)
    assert set().union(*groups) == set(range(5))


def test_auto_without_groups_is_iid_and_balanced(cancer: TabularSource) -> None:
    fed = FederatedData(cancer, AutoPartitioner(7), num_clients=7)
    sizes = [len(p) for p in all_indices(fed)]
    assert sum(sizes) == len(cancer.y) == 455
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_skews_labels_and_respects_min_size(small_hospitals: TabularSource) -> None:
    fed = FederatedData(small_hospitals, PARTITIONS["dirichlet"](5), num_clients=5)
    parts = all_indices(fed)
    assert min(len(p) for p in parts) >= 10
    shares = [small_hospitals.y[p].mean() for p in parts]
    iid = FederatedData(small_hospitals, IidPartitioner(5), num_clients=5)
    iid_shares = [small_hospitals.y[p].mean() for p in all_indices(iid)]
    assert np.std(shares) > 2 * np.std(iid_shares)


@pytest.mark.parametrize("val_fraction", [0.0, 0.1, 0.25, 0.5])
def test_val_split(small_hospitals: TabularSource, val_fraction: float) -> None:
    fed = FederatedData(small_hospitals, AutoPartitioner(5), 5, val_fraction=val_fraction, seed=3)
    for cid, part in enumerate(all_indices(fed)):
        data = fed.client(cid)
        assert len(data.y_val) == round(len(part) * val_fraction)
        # train and val are exactly the client's rows, split without overlap
        rows = {r.tobytes() for r in small_hospitals.x[part]}
        train = {r.tobytes() for r in data.x_train}
        val = {r.tobytes() for r in data.x_val}
        assert train | val == rows
        assert not train & val
        assert len(data.x_train) == len(data.y_train)


def test_val_split_is_seeded(small_hospitals: TabularSource) -> None:
    def val(seed: int) -> np.ndarray:
        return FederatedData(small_hospitals, AutoPartitioner(5), 5, seed=seed).client(2).x_val

    np.testing.assert_array_equal(val(0), val(0))
    assert not np.array_equal(val(0), val(1))


def test_tiny_client_keeps_one_validation_example() -> None:
    src = hospitals.load(num_hospitals=2, patients_per_hospital=3, test_patients_per_hospital=1)
    fed = FederatedData(src, AutoPartitioner(2), 2, val_fraction=0.1)
    data = fed.client(0)
    assert len(data.y_val) == 1
    assert len(data.y_train) == 2


def test_summary_matches_client_data(small_hospitals: TabularSource) -> None:
    fed = FederatedData(small_hospitals, AutoPartitioner(5), 5)
    summary = fed.summary()
    assert [row["client"] for row in summary] == list(range(5))
    for row in summary:
        data = fed.client(row["client"])
        assert row["train"] == len(data.y_train)
        assert row["val"] == len(data.y_val)
        assert sum(row["label_counts"]) == row["train"] + row["val"]
        labels = np.concatenate([data.y_train, data.y_val])
        assert row["label_counts"][1] == int(labels.sum())


# -- errors -------------------------------------------------------------------------------------
def test_more_clients_than_patients(cancer: TabularSource) -> None:
    with pytest.raises(DataError, match=r"num_clients=1000 .* only 455"):
        FederatedData(cancer, IidPartitioner(1000), num_clients=1000)


def test_natural_partition_with_mismatched_num_clients(small_hospitals: TabularSource) -> None:
    with pytest.raises(DataError, match="5 parts but num_clients=3"):
        FederatedData(small_hospitals, NaturalIdPartitioner(partition_by="group"), 3)
    with pytest.raises(DataError, match="5 parts but num_clients=3"):
        FederatedData(small_hospitals, AutoPartitioner(3), 3)


def test_natural_partition_without_groups(cancer: TabularSource) -> None:
    with pytest.raises(DataError, match="group"):
        FederatedData(cancer, NaturalIdPartitioner(partition_by="group"), 5)


@pytest.mark.filterwarnings("ignore:The specified min_partition_size")
def test_impossible_dirichlet_partition_is_a_data_error(cancer: TabularSource) -> None:
    with pytest.raises(DataError, match="DirichletPartitioner cannot split breast_cancer"):
        FederatedData(cancer, PARTITIONS["dirichlet"](60), num_clients=60).client(0)


def test_client_with_fewer_than_two_examples(cancer: TabularSource) -> None:
    fed = FederatedData(cancer, IidPartitioner(300), num_clients=300)
    assert len(fed.client(0).y_train) == 1  # 455 rows: the first 155 clients get 2
    with pytest.raises(DataError, match="client 299 of 300 got 1 examples"):
        fed.client(299)


@pytest.mark.parametrize("val_fraction", [-0.1, 1.0, 1.5])
def test_bad_val_fraction(cancer: TabularSource, val_fraction: float) -> None:
    with pytest.raises(DataError, match="val_fraction"):
        FederatedData(cancer, IidPartitioner(3), 3, val_fraction=val_fraction)


@pytest.mark.parametrize("cid", [-1, 3])
def test_unknown_client_id(cancer: TabularSource, cid: int) -> None:
    fed = FederatedData(cancer, IidPartitioner(3), 3)
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        fed.client(cid)


def test_source_validation() -> None:
    x = np.zeros((4, 2), np.float32)
    y = np.array([0, 1, 0, 1])
    with pytest.raises(DataError, match="labels"):
        TabularSource("t", x, np.array([0, 1, 2, 1]), x, y, num_classes=2)
    with pytest.raises(DataError, match="NaN"):
        TabularSource("t", np.full((4, 2), np.nan, np.float32), y, x, y, num_classes=2)
    with pytest.raises(DataError, match="3 feature rows but 4 labels"):
        TabularSource("t", x[:3], y, x, y, num_classes=2)
    with pytest.raises(DataError, match="group ids"):
        TabularSource("t", x, y, x, y, num_classes=2, groups=np.zeros(3))
