"""Client side: the Keras client and its adapter to Flower's Message API."""

from fedflower.client.keras_client import KerasClient

__all__ = ["KerasClient"]
