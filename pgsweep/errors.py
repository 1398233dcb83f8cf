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


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM arrived: the MLflow run ends KILLED, the command exits 128 + signal.

    A BaseException, like KeyboardInterrupt, so `except Exception` in a stage or a
    library does not swallow it; and not a KeyboardInterrupt, which Lightning turns
    into its own exit before pgsweep could mark the run.
    """

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = int(signum)
        self.signal_name = signal.Signals(self.signum).name
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum
