"""Reading and amending runs in the MLflow store: experiments, finished runs, logged models."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no lock, as MLflow itself
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def opening(uri: str | None) -> Iterator[None]:
    """Hold the SQLite store `uri` for this process alone while it opens it. The first process
    to open a new store creates its tables through MLflow's migrations, which do not survive a
    second process doing the same at once (a sweep and a run started together on a new store
    failed with "duplicate column name"): the others wait on `<store>.lock` until it is done.
    Other stores (a server, PostgreSQL) pass through."""
    path = sqlite_path(uri)
    if path is None or fcntl is None or not path.parent.is_dir():
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def sqlite_path(uri: str | None) -> Path | None:
    """The database file of a `sqlite:///` tracking URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri and uri.startswith("sqlite:///") else None


def settle(uri: str) -> None:
    """Leave a SQLite store with its tables made, for a process that opens it without `opening`
    (`mlflow server`): a new store is created here, under the lock; for an existing one, this
    waits until a run that is creating its tables has done so."""
    with opening(uri):
        path = sqlite_path(uri)
        if path is not None and path.parent.is_dir() and not (path.is_file() and path.stat().st_size):
            from mlflow import MlflowClient

            MlflowClient(uri).search_experiments(max_results=1)


def use_experiment(uri: str | None, name: str, artifact_location: str | None) -> str:
    """Point MLflow at `uri` and return the id of experiment `name`, creating it if needed."""
    import mlflow

    if uri:
        mlflow.set_tracking_uri(uri)
    with opening(uri or mlflow.get_tracking_uri()):
        found = mlflow.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = Path(artifact_location).expanduser().resolve().as_uri() if artifact_location else None
        return mlflow.create_experiment(name, artifact_location=location)



def log_to_run(run_id: str, metrics: Mapping[str, float], params: Mapping[str, Any] | None = None) -> None:
    """Add metrics (and params not yet set) to a finished run, keeping its status."""
    from mlflow import MlflowClient

    client = MlflowClient()
    logged = client.get_run(run_id).data.params
    for key, value in (params or {}).items():
        if key not in logged:  # MLflow params are write-once; a second k lives in the metric name
            client.log_param(run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)


def model_uri(run: Any) -> str:
    """Where a run's logged model is: its last model output (models are named after their run),
    else `runs:/<id>/model` as runs logged before models had names."""
    outputs = run.outputs.model_outputs if run.outputs else []
    return f"models:/{outputs[-1].model_id}" if outputs else f"runs:/{run.info.run_id}/model"


def load_run(uri: str | None, run_id: str) -> tuple[Any, dict[str, str]]:
    """The logged model of a run (on the CPU) and the run's params."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one model, no bar
    import mlflow
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException

    from vaelab.errors import ConfigError

    if uri:
        mlflow.set_tracking_uri(uri)
    try:
        run = mlflow.get_run(run_id)
        params = run.data.params
        model = mlflow.pytorch.load_model(model_uri(run), map_location="cpu")
    except MlflowException as err:
        raise ConfigError(f"run_id={run_id}: no such run with a logged model in {uri} ({err.message[:200]})") from None
    return model, params

