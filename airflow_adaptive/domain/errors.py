"""Errors a user can cause. Each carries a message that says what was wrong and what to do.

Entry points catch ``UserError`` and print its message on one line, without a traceback.
"""


class UserError(Exception):
    """Bad input from a user: a file, a flag, a feature, a quantity."""


class QuantityError(UserError, ValueError):
    """A Kubernetes quantity that does not parse."""


class TraceFormatError(UserError):
    """A trace that cannot be read at all (unknown format, empty, truncated)."""


class FeatureSchemaMismatch(UserError):
    """Job features that do not match the feature schema a profiler was trained on."""


class RegistryError(UserError):
    """The model registry cannot give what was asked (missing model, alias, or no answer)."""


class ModelNotFound(RegistryError):
    """The registry answered: the model, version or alias does not exist."""
