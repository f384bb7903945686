"""Datasets and their split into per-client data."""

from fedflower.data.arrays import from_arrays
from fedflower.data.source import ClientData, TabularSource

__all__ = ["ClientData", "TabularSource", "from_arrays"]
