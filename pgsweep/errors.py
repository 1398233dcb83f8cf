"""Errors a user can fix: shown as one line naming the problem, exit status 2."""


class PgsweepError(Exception):
    """Base of every error caused by input (data, config, model reference)."""


class DataError(PgsweepError):
    """A dataset folder or file cannot be used."""


class ConfigError(PgsweepError):
    """A config value is missing, malformed or out of range."""


class ModelError(PgsweepError):
    """A model reference, file or layer request cannot be used."""


class QueryError(PgsweepError, ValueError):
    """A prediction-gradient request that cannot be answered (layer, class, norm ...)."""
