"""Real deployments: the Flower app for ``flwr run``, SuperNode-local data, TLS and node keys,
a local multi-process federation, and on-device (TFLite) export.

Importing this package imports nothing heavy; the submodules do.
"""
