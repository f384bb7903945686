"""Hydra configs of the plugin (``strategy/trimmedmean.yaml``)."""
