"""The typed options of the built-in strategies: one dataclass per ``conf/strategy/<name>.yaml``.

Each is registered under the entry-point group ``fedflower.strategy_options`` with its
strategy's name (``pyproject.toml``), as a plugin registers its own, and stored in Hydra's
``ConfigStore`` as ``schema/strategy/<name>`` (:func:`fedflower.server.options.register`), so
Hydra refuses an unknown key or a value of the wrong type while composing. The fields are the
YAML file's keys, which the strategy's constructor takes; the rules on values (ranges) stay in
the constructor, with the message ``<key> must be <rule>, got <value>``. This module imports
neither Flower nor TensorFlow: the schemas are registered whenever Hydra starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedflower.server.options import AsyncOptions, SamplingOptions


@dataclass
class FedAvgOptions(SamplingOptions):
    """``strategy=fedavg`` (:class:`fedflower.strategies.fedavg.FedAvg`): client sampling only."""

    name: str = "fedavg"


@dataclass
class FedProxOptions(SamplingOptions):
    """``strategy=fedprox``: the proximal weight ``mu`` (arXiv:1812.06127)."""

    name: str = "fedprox"
    proximal_mu: float = 0.01


@dataclass
class FedSGDOptions(SamplingOptions):
    """``strategy=fedsgd``: the server step on the clients' mean update."""

    name: str = "fedsgd"
    server_learning_rate: float = 1.0
    weighted: bool = True
    full_batch: bool = True


@dataclass
class FedAvgMOptions(SamplingOptions):
    """``strategy=fedavgm``: server SGD with momentum (arXiv:1909.06335)."""

    name: str = "fedavgm"
    server_learning_rate: float = 1.0
    server_momentum: float = 0.9


@dataclass
class FedAdagradOptions(SamplingOptions):
    """``strategy=fedadagrad``: server Adagrad (arXiv:2003.00295)."""

    name: str = "fedadagrad"
    eta: float = 0.1
    tau: float = 0.001


@dataclass
class FedAdamOptions(FedAdagradOptions):
    """``strategy=fedadam``: server Adam (arXiv:2003.00295)."""

    name: str = "fedadam"
    beta_1: float = 0.9
    beta_2: float = 0.99


@dataclass
class FedYogiOptions(FedAdamOptions):
    """``strategy=fedyogi``: server Yogi (arXiv:2003.00295)."""

    name: str = "fedyogi"


@dataclass
class FedBuffOptions(AsyncOptions):
    """``strategy=fedbuff``: buffered asynchronous aggregation (arXiv:2106.06639)."""

    name: str = "fedbuff"
    buffer_size: int = 5
    server_lr: float = 1.0
    server_momentum: float = 0.0
    server_optimizer: Any = None  # null or a mapping {name: adam, eta: 0.01}: checked when built
    weighted: bool = True


@dataclass
class FedAsyncOptions(AsyncOptions):
    """``strategy=fedasync``: staleness-weighted mixing (arXiv:1903.03934)."""

    name: str = "fedasync"
    alpha: float = 0.6


@dataclass
class KrumOptions(SamplingOptions):
    """``strategy=krum``: the malicious clients tolerated (arXiv:1703.02757)."""

    name: str = "krum"
    num_malicious_nodes: int = 2


@dataclass
class MultiKrumOptions(KrumOptions):
    """``strategy=multikrum``: also the updates averaged (arXiv:1703.02757)."""

    name: str = "multikrum"
    num_nodes_to_select: int = 5


@dataclass
class BulyanOptions(SamplingOptions):
    """``strategy=bulyan``: the malicious clients tolerated (arXiv:1802.07927)."""

    name: str = "bulyan"
    num_malicious_nodes: int = 1


@dataclass
class FedMedianOptions(SamplingOptions):
    """``strategy=fedmedian`` (arXiv:1803.01498): client sampling only."""

    name: str = "fedmedian"


@dataclass
class FedTrimmedAvgOptions(SamplingOptions):
    """``strategy=fedtrimmedavg``: the fraction cut at each end (arXiv:1803.01498)."""

    name: str = "fedtrimmedavg"
    beta: float = 0.2


@dataclass
class FedNovaOptions(SamplingOptions):
    """``strategy=fednova`` (arXiv:2007.07481): client sampling only."""

    name: str = "fednova"


@dataclass
class FedDynOptions(SamplingOptions):
    """``strategy=feddyn``: the regularization weight (arXiv:2111.04263)."""

    name: str = "feddyn"
    alpha: float = 0.01


@dataclass
class ScaffoldOptions(SamplingOptions):
    """``strategy=scaffold``: the server step size ``eta_g`` (arXiv:1910.06378)."""

    name: str = "scaffold"
    global_lr: float = 1.0
