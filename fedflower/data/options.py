"""The typed options of the ``dataset`` and ``partition`` config groups.

One dataclass per ``conf/dataset/<name>.yaml`` and ``conf/partition/<name>.yaml``, its
``_target_`` the loader or partitioner it builds (``fedflower.data.*``, flwr-datasets'
partitioners). Hydra uses them as the groups' schemas (stored in its ``ConfigStore`` by
:func:`register`), so it refuses unknown keys and values of the wrong type while composing.
The rules on a loader's values live in the loader, which checks its arguments with
:mod:`fedflower.checks` (``<key> must be <rule>, got <value>``); flwr-datasets' partitioners
get theirs here (``__post_init__``), so a bad value is one line before any data is read.

The schemas sit in this module rather than beside each loader because it must import
nothing heavy: the loaders import scikit-learn, Hugging Face ``datasets`` and flwr-datasets
(seconds), and the command line checks a config before any of those load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from fedflower.checks import check_choice, check_number


@dataclass
class PatientOptions:
    """How generated hospitals differ (:func:`fedflower.data.hospitals.patients`)."""

    test_patients_per_hospital: int = 200
    num_features: int = 20
    case_mix: float = 0.5
    feature_shift: float = 0.3
    label_noise: float = 0.25
    seed: int = 0


@dataclass
class HospitalsOptions(PatientOptions):
    """``dataset=hospitals``: :func:`fedflower.data.hospitals.load`."""

    _target_: str = "fedflower.data.hospitals.load"
    num_hospitals: int = 10
    patients_per_hospital: int = 1000


@dataclass
class PopulationOptions(PatientOptions):
    """``dataset=population``: :class:`fedflower.data.population.HospitalPopulation`."""

    _target_: str = "fedflower.data.population.HospitalPopulation"
    num_clients: int = 10
    patients_per_client: int = 50
    test_hospitals: int = 100
    test_patients_per_hospital: int = 50
    val_fraction: float = 0.2


@dataclass
class HeldOutOptions:
    """``dataset=breast_cancer`` and ``dataset=digits``: bundled data, ``test_fraction`` out."""

    _target_: str = "fedflower.data.digits.load"
    test_fraction: float = 0.2
    seed: int = 0


@dataclass
class FedproxSyntheticOptions:
    """``dataset=fedprox_synthetic``: :func:`fedflower.data.fedprox_synthetic.load`."""

    _target_: str = "fedflower.data.fedprox_synthetic.load"
    alpha: float = 1.0
    beta: float = 1.0
    num_devices: int = 30
    num_features: int = 60
    num_classes: int = 10
    train_fraction: float = 0.9
    iid: bool = False
    seed: int = 0


@dataclass
class FinancialNewsOptions:
    """``dataset=financial_news``: :func:`fedflower.data.text.financial_news`."""

    _target_: str = "fedflower.data.text.financial_news"
    num_sentences: int = 3000
    label_noise: float = 0.03
    test_fraction: float = 0.2
    public_fraction: float = 0.1
    vocabulary_size: int = 2000
    seed: int = 0


@dataclass
class TextHubOptions:
    """``dataset=text_hub``: :func:`fedflower.data.text.hub`.

    ``data_files`` is a file, a list or a mapping of them (as ``datasets.load_dataset`` takes),
    so it is untyped here.
    """

    _target_: str = "fedflower.data.text.hub"
    _convert_: str = "all"
    path: str = "zeroshot/twitter-financial-news-sentiment"
    text_column: str = "text"
    label_column: str = "label"
    split: str = "train"
    data_files: Any = None
    test_fraction: float = 0.2
    public_fraction: float = 0.1
    vocabulary_size: int = 5000
    seed: int = 0


@dataclass
class FileOptions:
    """``dataset=npz``: a user's file read by :func:`fedflower.data.files.load`.

    ``label`` names one column (array) or the 0/1 columns of a one-hot label, so it is untyped.
    """

    _target_: str = "fedflower.data.files.load"
    path: str = "???"
    label: Any = "label"
    test_path: Optional[str] = None  # noqa: UP045 (OmegaConf reads typing.Optional)
    test_fraction: float = 0.2
    client_column: Optional[str] = None  # noqa: UP045
    standardize_features: bool = True
    seed: int = 0


@dataclass
class TableOptions(FileOptions):
    """``dataset=csv`` and ``dataset=parquet``: a table's column roles and empty cells.

    ``features`` and ``exclude`` stay untyped so that a bare column name (``dataset.features=age``)
    gets the message of :class:`fedflower.data.tables.Options`, which says how to write a list.
    """

    features: Any = None
    text_column: Optional[str] = None  # noqa: UP045
    exclude: Any = field(default_factory=list)
    missing: str = "error"
    missing_indicator: bool = False


@dataclass
class MemoryDataOptions:
    """``dataset=memory``: arrays given to ``fedflower.run(data=...)``, kept under ``key``."""

    _target_: str = "fedflower.data.arrays.from_memory"
    key: str = "???"


DATASETS: dict[str, type] = {
    "hospitals": HospitalsOptions,
    "population": PopulationOptions,
    "breast_cancer": HeldOutOptions,
    "digits": HeldOutOptions,
    "fedprox_synthetic": FedproxSyntheticOptions,
    "financial_news": FinancialNewsOptions,
    "text_hub": TextHubOptions,
    "csv": TableOptions,
    "parquet": TableOptions,
    "npz": FileOptions,
    "memory": MemoryDataOptions,
}
"""The ``dataset`` group's options: name -> typed options."""


def _clients(value: int) -> None:
    check_number("partition.num_partitions", value, minimum=1, integer=True)


def _seed(value: int) -> None:
    check_number("partition.seed", value, minimum=0, integer=True)


@dataclass
class IidOptions:
    """``partition=iid``: flwr-datasets' ``IidPartitioner``."""

    _target_: str = "flwr_datasets.partitioner.IidPartitioner"
    num_partitions: int = 10

    def __post_init__(self) -> None:
        """Check the number of partitions."""
        _clients(self.num_partitions)


@dataclass
class AutoOptions(IidOptions):
    """``partition=auto``: :class:`fedflower.data.partition.AutoPartitioner`."""

    _target_: str = "fedflower.data.partition.AutoPartitioner"


@dataclass
class NaturalOptions:
    """``partition=natural``: flwr-datasets' ``NaturalIdPartitioner`` (one client per group)."""

    _target_: str = "flwr_datasets.partitioner.NaturalIdPartitioner"
    partition_by: str = "group"


@dataclass
class DirichletOptions:
    """``partition=dirichlet``: flwr-datasets' ``DirichletPartitioner`` (label skew)."""

    _target_: str = "flwr_datasets.partitioner.DirichletPartitioner"
    num_partitions: int = 10
    partition_by: str = "label"
    alpha: float = 0.5
    min_partition_size: int = 10
    self_balancing: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the concentration and the smallest partition."""
        _clients(self.num_partitions)
        check_number("partition.alpha", self.alpha, minimum=0.0, min_open=True)
        check_number(
            "partition.min_partition_size", self.min_partition_size, minimum=0, integer=True
        )
        _seed(self.seed)


CLASS_ASSIGNMENT_MODES = ("random", "deterministic", "first-deterministic")
"""How flwr-datasets' ``PathologicalPartitioner`` gives classes to clients."""


@dataclass
class PathologicalOptions:
    """``partition=pathological``: flwr-datasets' ``PathologicalPartitioner``."""

    _target_: str = "flwr_datasets.partitioner.PathologicalPartitioner"
    num_partitions: int = 10
    partition_by: str = "label"
    num_classes_per_partition: int = 2
    class_assignment_mode: str = "random"
    shuffle: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the classes per client and how they are assigned."""
        _clients(self.num_partitions)
        check_number(
            "partition.num_classes_per_partition",
            self.num_classes_per_partition,
            minimum=1,
            integer=True,
        )
        check_choice(
            "partition.class_assignment_mode", self.class_assignment_mode, CLASS_ASSIGNMENT_MODES
        )
        _seed(self.seed)


@dataclass
class ShardOptions:
    """``partition=shard``: flwr-datasets' ``ShardPartitioner`` (shards of sorted labels)."""

    _target_: str = "flwr_datasets.partitioner.ShardPartitioner"
    num_partitions: int = 10
    partition_by: str = "label"
    num_shards_per_partition: Optional[int] = 2  # noqa: UP045
    shard_size: Optional[int] = None  # noqa: UP045
    keep_incomplete_shard: bool = False
    shuffle: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the shard counts."""
        _clients(self.num_partitions)
        for key in ("num_shards_per_partition", "shard_size"):
            value = getattr(self, key)
            check_number(f"partition.{key}", value, minimum=1, integer=True, allow_none=True)
        _seed(self.seed)


@dataclass
class SizeOptions:
    """``partition=size``: :class:`fedflower.data.partition.SizeSkewPartitioner`.

    The skew's rule is the partitioner's own (its constructor checks it).
    """

    _target_: str = "fedflower.data.partition.SizeSkewPartitioner"
    num_partitions: int = 10
    skew: str = "linear"
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the number of partitions and the seed."""
        _clients(self.num_partitions)
        _seed(self.seed)


PARTITIONS: dict[str, type] = {
    "auto": AutoOptions,
    "iid": IidOptions,
    "natural": NaturalOptions,
    "dirichlet": DirichletOptions,
    "pathological": PathologicalOptions,
    "shard": ShardOptions,
    "size": SizeOptions,
}
"""The ``partition`` group's options: name -> typed options."""


def register() -> None:
    """Store the dataclasses in Hydra's ``ConfigStore`` as ``schema/dataset|partition/<name>``.

    Each ``conf/<group>/<name>.yaml`` names ``/schema/<group>/<name>@_here_`` first in its
    defaults list.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, kinds in (("dataset", DATASETS), ("partition", PARTITIONS)):
        for name, node in kinds.items():
            store.store(group=f"schema/{group}", name=name, node=node)
