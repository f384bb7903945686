"""Split a dataset's training pool across clients with flwr-datasets partitioners.

The pool is handed to the partitioner as a small ``datasets.Dataset`` of row indices, labels and
(when the dataset has them) natural group ids, so any flwr-datasets partitioner works on it
(IID, Dirichlet, natural id, ...) without copying the features. Each client's share is then
split into local training and validation data, seeded per client.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

import datasets
import numpy as np
from flwr_datasets.partitioner import (
    ExponentialPartitioner,
    IidPartitioner,
    LinearPartitioner,
    NaturalIdPartitioner,
    Partitioner,
)

from fedflower.checks import check_choice, check_number
from fedflower.data.source import ClientData, TabularSource
from fedflower.errors import DataError

INDEX, LABEL, GROUP = "idx", "label", "group"
T = TypeVar("T")


class AutoPartitioner(Partitioner):
    """The dataset's natural split (one group per client) when it has one, IID otherwise.

    Parameters
    ----------
    num_partitions : int
        Number of clients.
    """

    def __init__(self, num_partitions: int) -> None:
        super().__init__()
        self._num_partitions = num_partitions

    @cached_property
    def _inner(self) -> Partitioner:
        inner: Partitioner
        if GROUP in self.dataset.column_names:
            inner = NaturalIdPartitioner(partition_by=GROUP)
        else:
            inner = IidPartitioner(self._num_partitions)
        inner.dataset = self.dataset
        return inner

    @property
    def num_partitions(self) -> int:
        """Number of partitions."""
        return self._inner.num_partitions

    def load_partition(self, partition_id: int) -> datasets.Dataset:
        """Load one client's rows."""
        return self._inner.load_partition(partition_id)


SIZE_SKEWS = {"linear": LinearPartitioner, "exponential": ExponentialPartitioner}
"""flwr-datasets partitioners whose client ``i`` gets a share of the rows growing with ``i``."""


class SizeSkewPartitioner(Partitioner):
    """Quantity skew: flwr-datasets' linear or exponential size partitioner on shuffled rows.

    Client ``i`` (0-based) gets a share of the pool proportional to ``i + 1`` (``linear``) or
    ``exp(i + 1)`` (``exponential``). flwr-datasets' size partitioners cut the rows in their
    order; the rows are shuffled first so that the sizes differ but not the labels.

    Parameters
    ----------
    num_partitions : int
        Number of clients.
    skew : {"linear", "exponential"}
        How the sizes grow with the client id.
    seed : int
        Seed of the shuffle.
    """

    def __init__(self, num_partitions: int, skew: str = "linear", seed: int = 0) -> None:
        super().__init__()
        self._num_partitions = num_partitions
        self._skew = check_choice("partition.skew", skew, tuple(SIZE_SKEWS))
        self._seed = seed

    @cached_property
    def _inner(self) -> Partitioner:
        inner: Partitioner = SIZE_SKEWS[self._skew](self._num_partitions)
        inner.dataset = self.dataset.shuffle(seed=self._seed)
        return inner

    @property
    def num_partitions(self) -> int:
        """Number of partitions."""
        return self._num_partitions

    def load_partition(self, partition_id: int) -> datasets.Dataset:
        """Load one client's rows."""
        return self._inner.load_partition(partition_id)


def _partitioner_call(source: TabularSource, partitioner: Partitioner, call: Callable[[], T]) -> T:
    """Run ``call``, turning a partitioner's failure (e.g. no such column) into a DataError."""
    try:
        return call()
    except (ValueError, KeyError) as exc:
        raise DataError(
            f"{type(partitioner).__name__} cannot split {source.name}: {exc} "
            "(choose another partition=..., fewer clients or other partition.* options)"
        ) from exc


class FederatedData:
    """A dataset split across ``num_clients`` clients; each client's data is built on first use.

    Parameters
    ----------
    source : TabularSource
        The dataset.
    partitioner : flwr_datasets.partitioner.Partitioner
        Any flwr-datasets partitioner with ``num_partitions == num_clients``.
    num_clients : int
        Number of clients.
    val_fraction : float
        Fraction of each client's rows kept for local validation.
    seed : int
        Seed of the per-client train/validation split.
    """

    def __init__(
        self,
        source: TabularSource,
        partitioner: Partitioner,
        num_clients: int,
        val_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        if num_clients > len(source.y):
            raise DataError(
                f"num_clients={num_clients} but {source.name} has only {len(source.y)} "
                "training examples: use fewer clients"
            )
        check_number(
            "client.val_fraction",
            val_fraction,
            minimum=0,
            maximum=1,
            max_open=True,
            error=DataError,
        )
        columns: dict[str, Any] = {INDEX: np.arange(len(source.y)), LABEL: source.y}
        if source.groups is not None:
            columns[GROUP] = source.groups
        # Unformatted: flwr-datasets partitioners read whole columns with np.array(...), which
        # is several times faster on Arrow lists than on datasets' numpy-formatted columns.
        partitioner.dataset = datasets.Dataset.from_dict(columns)
        num_partitions = _partitioner_call(source, partitioner, lambda: partitioner.num_partitions)
        if num_partitions != num_clients:
            raise DataError(
                f"the partition of {source.name} has {num_partitions} parts "
                f"but num_clients={num_clients}: use num_clients={num_partitions} "
                "or another partition (partition=iid|dirichlet)"
            )
        self.source = source
        self.partitioner = partitioner
        self.num_clients = num_clients
        self.val_fraction = val_fraction
        self.seed = seed
        self._cache: dict[int, ClientData] = {}

    def indices(self, cid: int) -> np.ndarray:
        """Rows of the training pool that belong to client ``cid``."""
        check_number("client id", cid, minimum=0, maximum=self.num_clients - 1, error=DataError)
        rows = _partitioner_call(
            self.source,
            self.partitioner,
            lambda: self.partitioner.load_partition(cid).with_format("numpy")[INDEX][:],
        )
        return np.asarray(rows, dtype=np.int64)

    def site_names(self) -> tuple[str, ...] | None:
        """Each client's site name when every client holds exactly one site's rows, else None.

        A natural partition (``partition=auto|natural`` on a ``client_column``) gives client
        ``i`` the rows of group ``i``; the per-client results then name the site.
        """
        names, groups = self.source.group_names, self.source.groups
        if names is None or groups is None or len(names) != self.num_clients:
            return None
        for cid in range(self.num_clients):
            if set(np.unique(groups[self.indices(cid)]).tolist()) != {cid}:
                return None
        return names

    def client(self, cid: int) -> ClientData:
        """Client ``cid``'s local training and validation data."""
        if cid not in self._cache:
            self._cache[cid] = self._split(cid)
        return self._cache[cid]

    def _split(self, cid: int) -> ClientData:
        idx = self.indices(cid)
        if len(idx) < 2:
            raise DataError(
                f"client {cid} of {self.num_clients} got {len(idx)} examples "
                f"of {self.source.name}: "
                "use fewer clients or another partition"
            )
        rng = np.random.default_rng([self.seed, cid])
        idx = rng.permutation(idx)
        n_val = min(len(idx) - 1, round(len(idx) * self.val_fraction))
        if self.val_fraction > 0:
            n_val = max(1, n_val)
        val, train = idx[:n_val], idx[n_val:]
        x, y = self.source.x, self.source.y
        return ClientData(x[train], y[train], x[val], y[val])

    def prepare(self, source: TabularSource, transform: Callable[[np.ndarray], np.ndarray]) -> None:
        """Replace the rows by their features after preprocessing (same split, same order).

        Each client's rows pass ``transform`` separately; ``source`` is the dataset whose
        rows were transformed the same way (the central test set's features).
        """
        for cid in range(self.num_clients):
            data = self.client(cid)
            self._cache[cid] = ClientData(
                transform(data.x_train), data.y_train, transform(data.x_val), data.y_val
            )
        self.source = source

    def summary(self) -> list[dict[str, Any]]:
        """Per-client sizes and label counts (written to ``partition.json``)."""
        rows = []
        for cid in range(self.num_clients):
            data = self.client(cid)
            labels = np.concatenate([data.y_train, data.y_val])
            counts = np.bincount(labels, minlength=self.source.num_classes)
            rows.append(
                {
                    "client": cid,
                    "train": len(data.y_train),
                    "val": len(data.y_val),
                    "label_counts": counts.tolist(),
                }
            )
        return rows
