"""Datasets and their split into per-client data."""

from fedflower.data.source import ClientData, TabularSource

__all__ = ["ClientData", "TabularSource"]
