"""Client side: the Keras client and its adapter to Flower's Message API."""

from __future__ import annotations

from typing import Any

__all__ = ["KerasClient"]


def __getattr__(name: str) -> Any:
    """``KerasClient`` on first use: the package's light modules (``options``) need no Keras."""
    if name == "KerasClient":
        from fedflower.client.keras_client import KerasClient

        return KerasClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
