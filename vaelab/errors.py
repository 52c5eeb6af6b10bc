"""Errors a user can cause and fix; the entry point turns them into one line and exit code 2."""


class VaelabError(Exception):
    """Base class: a problem with input the user controls (config, data, environment)."""


class ConfigError(VaelabError):
    """A config value is missing, of the wrong kind or out of range."""


class DataError(VaelabError):
    """The data set could not be found, fetched or verified."""


class DivergenceError(VaelabError):
    """Training produced a non-finite loss."""


class TrackingError(VaelabError):
    """The tracking backend (MLflow) could not record the run."""


class CheckpointError(VaelabError):
    """A checkpoint could not be read or does not fit the run; `reason`: why, in a few words."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class PreviousFailure(VaelabError):
    """The same config failed before for a real error; re-running it would repeat that."""


class ResourceError(VaelabError):
    """The machine ran out of something a run needs (disk space): freeing it and re-running resumes."""
