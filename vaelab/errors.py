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


def config_error(err: BaseException) -> str | None:
    """A short message for errors in the user's configs (YAML syntax, composition, types), or
    None for anything else (a bug, whose traceback is worth seeing)."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    for e in chain:
        if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
            mark = e.problem_mark
            return (f"YAML syntax error in {mark.name}, line {mark.line + 1}, column {mark.column + 1}: "
                    f"{e.problem}")
    for e in chain:
        if isinstance(e, (HydraException, OmegaConfBaseException)):
            lines = [line for line in str(e).strip().splitlines() if line.strip()]
            if "Available options" in str(e):  # every option of the group, not Hydra's search path
                return "\n".join(lines[:next((i for i, x in enumerate(lines) if x.startswith("Config search")),
                                              len(lines))])
            reason = next((c for c in chain[chain.index(e) + 1:] if isinstance(c, OmegaConfBaseException)), None)
            if reason is not None:  # "Error merging override k=v" says which; its cause says why
                lines = lines[:1] + [line.strip() for line in str(reason).splitlines()[:1]]
                return ": ".join(lines)
            return "\n".join(lines[:5])
    return None
