"""fedflower: plugin-based federated learning for Keras models, built on Flower and Hydra."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedflower")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
