"""Typed errors a user can cause. The CLI turns each into one line on stderr and exit code 2."""


class DeepidsError(Exception):
    """Base class for every error deepids raises on purpose."""


class InputError(DeepidsError):
    """A data file is missing, empty, unreadable, or its layout is unknown."""


class SchemaError(DeepidsError):
    """Data does not have the columns a model or command needs."""


class ModelFormatError(DeepidsError):
    """A saved model directory is damaged, or was written by a newer format version."""


class ConfigError(DeepidsError):
    """A hyperparameter or option has an invalid value."""


class NotFittedError(DeepidsError):
    """A model was asked to score, predict or save before it was fitted (or loaded)."""


class OutputError(DeepidsError):
    """An output cannot be written (disk full, permission, a symlink in the way); nothing partial is left."""
