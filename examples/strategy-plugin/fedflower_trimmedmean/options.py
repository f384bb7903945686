"""The typed options of ``strategy=trimmedmean``: Hydra refuses unknown keys and wrong types.

Kept apart from ``strategy.py``: it imports neither Flower nor TensorFlow, as fedflower loads
it whenever Hydra starts, before either is needed.
"""

from dataclasses import dataclass

from fedflower.server.options import SamplingOptions


@dataclass
class TrimmedMeanOptions(SamplingOptions):
    """``conf/strategy/trimmedmean.yaml``: fedflower's client sampling plus ``beta``."""

    name: str = "trimmedmean"
    beta: float = 0.2
