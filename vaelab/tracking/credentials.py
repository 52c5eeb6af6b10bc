"""A tracking server's login, read from a file in MLflow's credentials format (what `make server`
writes; `~/.mlflow/credentials` has the same form)."""

from __future__ import annotations

import configparser
import os
from pathlib import Path


def read_credentials(path: str | Path) -> tuple[str, str]:
    """(username, password) from a file in MLflow's credentials format."""
    parser = configparser.ConfigParser()
    try:
        with open(Path(path).expanduser()) as f:
            parser.read_file(f)
        return parser["mlflow"]["mlflow_tracking_username"], parser["mlflow"]["mlflow_tracking_password"]
    except (OSError, KeyError, configparser.Error) as err:
        reason = err.strerror if isinstance(err, OSError) else f"it lacks {err}"
        raise ValueError(f"{path} cannot be read as MLflow credentials ({reason})") from None


def use_credentials(path: str) -> None:
    """The login into the environment, where MLflow's client and every process started from this
    one (a sweep's workers and jobs) find it."""
    from vaelab.errors import ConfigError

    try:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = read_credentials(path)
    except ValueError as err:
        raise ConfigError(f"tracking.credentials: {err}") from None
