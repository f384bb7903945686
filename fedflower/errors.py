"""The exceptions fedflower raises for bad input.

The CLI turns every ``FedflowerError`` into one line on stderr and a non-zero exit code.
"""


class FedflowerError(Exception):
    """Base class of all errors caused by input the user can fix."""


class ConfigError(FedflowerError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(FedflowerError, ValueError):
    """The data cannot be loaded or split as asked."""


class PluginError(FedflowerError, LookupError):
    """A strategy plugin is unknown or cannot be loaded."""


class UpdateRejected(FedflowerError, ValueError):
    """A client's model update is malformed (wrong shapes, NaN or infinite values)."""


class ModelMismatch(FedflowerError, ValueError):
    """Arrays received do not fit the model's variables (a missing, extra or reshaped variable)."""


class FederationError(FedflowerError, RuntimeError):
    """The federation cannot go on: too few nodes connected, or too many rounds without quorum."""
