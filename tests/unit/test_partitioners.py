"""Every partition kind does what its parameters say, on scikit-learn's digits (10 classes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    PathologicalPartitioner,
    ShardPartitioner,
)

from fedflower.data import digits
from fedflower.data.heterogeneity import (
    heterogeneity,
    label_entropy,
    summary_line,
    write_partition_report,
)
from fedflower.data.partition import FederatedData, SizeSkewPartitioner
from fedflower.data.source import TabularSource
from fedflower.errors import ConfigError

NUM_CLIENTS = 10


@pytest.fixture(scope="module")
def pool() -> TabularSource:
    return digits.load()


def label_counts(fed: FederatedData) -> np.ndarray:
    """Per-client label counts over all of a client's rows, from the partition itself."""
    y = fed.source.y
    return np.stack([np.bincount(y[fed.indices(c)], minlength=10) for c in range(fed.num_clients)])


def test_dirichlet_small_alpha_gives_near_single_class_clients(pool: TabularSource) -> None:
    """alpha = 0.01 (self-balancing, >= 10 rows each): measured mean top-class shares 0.97,
    0.82 and 0.99 for seeds 0, 1, 2; with alpha = 100 they are about 0.15."""
    means = []
    for seed in (0, 1, 2):
        partitioner = DirichletPartitioner(
            NUM_CLIENTS, "label", 0.01, min_partition_size=10, self_balancing=True, seed=seed
        )
        counts = label_counts(FederatedData(pool, partitioner, NUM_CLIENTS))
        top_share = counts.max(axis=1) / counts.sum(axis=1)
        assert top_share.mean() >= 0.8
        means.append(top_share.mean())
    assert np.mean(means) >= 0.9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dirichlet_skew_grows_as_alpha_shrinks(pool: TabularSource, seed: int) -> None:
    entropy = {}
    for alpha in (0.1, 1.0, 100.0):
        partitioner = DirichletPartitioner(
            NUM_CLIENTS, partition_by="label", alpha=alpha, min_partition_size=5, seed=seed
        )
        clients = FederatedData(pool, partitioner, NUM_CLIENTS, seed=seed).summary()
        entropy[alpha] = heterogeneity(clients)["mean_label_entropy_bits"]
    assert entropy[0.1] < entropy[1.0] < entropy[100.0]
    assert entropy[100.0] >= 3.2  # log2(10) = 3.32 bits for balanced classes


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pathological_gives_exactly_k_classes(pool: TabularSource, k: int) -> None:
    partitioner = PathologicalPartitioner(
        NUM_CLIENTS, partition_by="label", num_classes_per_partition=k, seed=0
    )
    counts = label_counts(FederatedData(pool, partitioner, NUM_CLIENTS))
    assert ((counts > 0).sum(axis=1) == k).all()


def test_shard_gives_equal_shards_of_at_most_two_classes_each(pool: TabularSource) -> None:
    partitioner = ShardPartitioner(
        NUM_CLIENTS, partition_by="label", num_shards_per_partition=2, seed=0
    )
    counts = label_counts(FederatedData(pool, partitioner, NUM_CLIENTS))
    shard = len(pool.y) // (2 * NUM_CLIENTS)
    assert (counts.sum(axis=1) == 2 * shard).all()
    # a shard of sorted labels spans at most 2 classes (shards are smaller than a class)
    assert ((counts > 0).sum(axis=1) <= 4).all()
    assert (counts > 0).sum(axis=1).mean() <= 3.0


@pytest.mark.parametrize("skew", ["linear", "exponential"])
def test_size_skew_grows_with_the_client_id_and_keeps_labels_iid(
    pool: TabularSource, skew: str
) -> None:
    n = 5
    fed = FederatedData(pool, SizeSkewPartitioner(n, skew=skew, seed=0), n)
    sizes = np.array([len(fed.indices(c)) for c in range(n)])
    assert sizes.sum() == len(pool.y)
    weights = np.arange(1, n + 1) if skew == "linear" else np.exp(np.arange(1, n + 1))
    np.testing.assert_allclose(sizes, weights / weights.sum() * len(pool.y), atol=n)
    largest = np.bincount(pool.y[fed.indices(n - 1)], minlength=10)
    assert largest.min() > 0  # the largest client sees every class: rows were shuffled


def test_size_skew_rejects_unknown_skew() -> None:
    with pytest.raises(ConfigError, match=r"partition\.skew must be one of linear, exponential"):
        SizeSkewPartitioner(3, skew="quadratic")


def test_label_entropy() -> None:
    assert label_entropy(np.array([5, 0, 0])) == 0.0
    assert label_entropy(np.array([4, 4, 4, 4])) == pytest.approx(2.0)
    assert label_entropy(np.array([0, 0])) == 0.0


def test_heterogeneity_of_iid_and_single_class_clients(pool: TabularSource) -> None:
    iid = heterogeneity(FederatedData(pool, IidPartitioner(NUM_CLIENTS), NUM_CLIENTS).summary())
    assert iid["mean_label_entropy_bits"] >= iid["pool_label_entropy_bits"] - 0.1
    assert iid["mean_classes_per_client"] == 10
    assert iid["size_max"] - iid["size_min"] <= 1
    one = heterogeneity([{"label_counts": [3, 0]}, {"label_counts": [0, 5]}])
    assert one == {
        "mean_label_entropy_bits": 0.0,
        "pool_label_entropy_bits": pytest.approx(label_entropy(np.array([3, 5]))),
        "mean_classes_per_client": 1.0,
        "size_min": 3,
        "size_median": 4.0,
        "size_max": 5,
    }
    line = summary_line("X", 2, one)
    assert line.startswith("partition X: 2 clients, label entropy 0.00 bits per client (pool 0.95)")
    assert line.endswith("sizes min/median/max 3/4/5")


def test_partition_report_writes_json_and_plot(pool: TabularSource, tmp_path: Path) -> None:
    partitioner = PathologicalPartitioner(4, partition_by="label", num_classes_per_partition=2)
    fed = FederatedData(pool, partitioner, 4)
    line = write_partition_report(fed, tmp_path)
    record = json.loads((tmp_path / "partition.json").read_text())
    assert record["partitioner"] == "PathologicalPartitioner"
    assert record["heterogeneity"]["mean_classes_per_client"] == 2.0
    assert [c["client"] for c in record["clients"]] == [0, 1, 2, 3]
    assert "2.0 classes per client" in line
    png = (tmp_path / "partition.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    quiet = tmp_path / "no_plot"
    quiet.mkdir()
    write_partition_report(fed, quiet, plot=False)
    assert sorted(p.name for p in quiet.iterdir()) == ["partition.json"]


def test_clients_of_a_natural_partition_carry_their_sites_names(pool: TabularSource) -> None:
    import fedflower
    from fedflower.data.partition import AutoPartitioner

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 2)), np.arange(60) % 2
    sites = np.array(["St. Mary's", "Ünivèrsity", "Rural clinic"])[np.arange(60) % 3]
    table = fedflower.data.from_arrays(x, y, clients=sites, x_test=x, y_test=y)
    fed = FederatedData(table, AutoPartitioner(3), 3)
    names = fed.site_names()
    assert names == ("Rural clinic", "St. Mary's", "Ünivèrsity")
    for cid, name in enumerate(names):
        assert set(sites[fed.indices(cid)]) == {name}
    assert FederatedData(table, IidPartitioner(3), 3).site_names() is None
    assert FederatedData(pool, IidPartitioner(3), 3).site_names() is None
