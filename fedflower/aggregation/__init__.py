"""Aggregation math in pure NumPy: no Flower, no TensorFlow.

* :mod:`~fedflower.aggregation.mean`: the streaming weighted mean every strategy folds
  updates through, update checks and arithmetic;
* :mod:`~fedflower.aggregation.optimizers`: server optimizers (FedAvgM, FedAdam, FedYogi,
  FedAdagrad) on the averaged update;
* :mod:`~fedflower.aggregation.staleness`: staleness weighting and the FedBuff/FedAsync math.
"""

from fedflower.aggregation.mean import (
    ACCUMULATORS,
    CHUNK,
    GROUP,
    Arrays,
    WeightedMean,
    cast_like,
    check_update,
    sgd_step,
    subtract,
    weighted_mean,
)
from fedflower.aggregation.optimizers import (
    ServerAdagrad,
    ServerAdam,
    ServerAdaptive,
    ServerOptimizer,
    ServerSGD,
    ServerYogi,
)

__all__ = [
    "ACCUMULATORS",
    "CHUNK",
    "GROUP",
    "Arrays",
    "ServerAdagrad",
    "ServerAdam",
    "ServerAdaptive",
    "ServerOptimizer",
    "ServerSGD",
    "ServerYogi",
    "WeightedMean",
    "cast_like",
    "check_update",
    "sgd_step",
    "subtract",
    "weighted_mean",
]
