"""A run's outputs: the one writer of its files, the one reader of a run directory, the sinks.

- :class:`~fedflower.outputs.writer.RunWriter` writes ``metrics.jsonl`` (one row per round) and
  ``results.json`` (the run's summary); nothing else writes them.
- :class:`~fedflower.outputs.rundir.RunDir` reads a run directory; ``fedflower-compare``,
  ``fedflower export``, the deployment driver and the tests read runs through it.
- Sinks receive the same rows and results: the console (:mod:`fedflower.outputs.console`), the
  plot (:mod:`fedflower.outputs.plots`), TensorBoard and W&B (:mod:`fedflower.outputs.tracking`).
- Each feature contributes its own fields to the console (:mod:`fedflower.outputs.fields`).

The package imports neither Flower nor TensorFlow, so reading a run stays cheap.
"""

from fedflower.outputs.rundir import RunDir
from fedflower.outputs.writer import RunWriter

__all__ = ["RunDir", "RunWriter"]
