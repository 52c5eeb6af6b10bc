"""The MLflow store: reaching it (a client for an explicit tracking URI, never a process-wide one;
its lock; a server's login), experiments, looking runs up, artifacts and their digests, and where
MLflow's own log records go."""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vaelab.tracking.base import PastRun

IDENTITY_TAG = "vaelab.identity"  # vaelab.identity.config_identity of the run's config and code
FAILURE_TAG = "vaelab.failure"  # "error" when a run failed for a reason re-running would repeat
MODEL_TAG = "vaelab.model_id"  # the run's logged model, once it is logged
DIGEST_TAG = "vaelab.sha256."  # + a file's name: its sha256 when vaelab wrote it
WEIGHTS = "vaelab/weights.pt"  # in the logged model: its state_dict, read with weights_only=True
SPEC = "vaelab/spec.json"  # beside it: the model and likelihood configs that rebuild it
FIGURES = "figures"  # one-off figures; images/ belongs to MLflow's keyed images
LIBRARY_LOGGERS = ("mlflow", "sqlalchemy", "alembic", "urllib3", "vaelab.tracking.detail")
_records: logging.Handler | None = None  # where route_library_logs sent them last


@contextlib.contextmanager
def opening(uri: str | None) -> Iterator[None]:
    """Hold the SQLite store `uri` for this process alone while it opens it: MLflow's migrations,
    which make a new store's tables, fail when two processes run them at once ("duplicate column
    name"), so the others wait on `<store>.lock`. Other stores (a server, PostgreSQL) pass through."""
    path = sqlite_path(uri)
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)  # a new home: the lock needs its folder
        lock = open(path.with_name(path.name + ".lock"), "a") if path is not None else None
    except OSError:  # a folder that cannot be written: opening the store says why
        lock = None
    with lock or contextlib.nullcontext():
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def sqlite_path(uri: str | None) -> Path | None:
    """The database file of a `sqlite:///` tracking URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri and uri.startswith("sqlite:///") else None


def connect(uri: str) -> Any:
    """An `MlflowClient` for `uri`, its store opened (a new SQLite store's tables made) under the lock."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # MLflow's records go where vaelab says
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow import MlflowClient

    with opening(uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    return client


def reach(uri: str, timeout_s: float = 5.0) -> Any:
    """`connect` for a command that reads or annotates runs: a store not reached within `timeout_s`
    is a one-line TrackingError."""
    from vaelab.paths import home
    from vaelab.tracking.worker import until_usable

    if _records is None:
        route_library_logs(home() / "tracking.log")
    retry_on_our_terms(timeout_s)
    return until_usable(uri, timeout_s, timeout_s, connect, uri)


def retry_on_our_terms(timeout_s: float) -> None:
    """vaelab retries a store itself (`worker`); MLflow's HTTP retries would add minutes per call.
    A request waits up to `timeout_s` (connecting, then between bytes of the answer): a server
    that is slow to answer is busy and retried (`until_usable`), not unreachable."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(math.ceil(timeout_s), 1)))


def read_credentials(path: str | Path) -> tuple[str, str]:
    """(username, password) from a file in MLflow's credentials format (what `make server` writes;
    `~/.mlflow/credentials` has the same form)."""
    from vaelab.errors import ConfigError

    parser = configparser.ConfigParser()
    try:
        with open(Path(path).expanduser()) as f:
            parser.read_file(f)
        return parser["mlflow"]["mlflow_tracking_username"], parser["mlflow"]["mlflow_tracking_password"]
    except (OSError, KeyError, configparser.Error) as err:
        reason = err.strerror if isinstance(err, OSError) else f"it lacks {err}"
        raise ConfigError(f"tracking.credentials: {path} cannot be read as MLflow credentials ({reason})") from None


def use_credentials(path: str) -> None:
    """A server's login into the environment, where MLflow's client and every process started from
    this one (a sweep's workers and jobs) find it."""
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = read_credentials(path)


def settle(uri: str) -> None:
    """A SQLite store's tables made, under the lock, for a process that opens it without it
    (`mlflow server`)."""
    path = sqlite_path(uri)
    if path is not None and path.parent.is_dir():
        connect(uri)


def use_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of experiment `name`, created if needed (by another command at the same time too)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = Path(artifact_location).expanduser().resolve().as_uri() if artifact_location else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by another command
        return client.get_experiment_by_name(name).experiment_id


def latest(client: Any, experiment_id: str, tag: str, value: str) -> Any | None:
    """The latest run in the experiment whose `tag` is `value`."""
    found = client.search_runs([experiment_id], f"tags.`{tag}` = '{value}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def find_run(client: Any, experiment_id: str, identity: str) -> PastRun | None:
    """The latest run in the experiment with this identity."""
    run = latest(client, experiment_id, IDENTITY_TAG, identity)
    if run is None:
        return None
    tags = run.data.tags
    number = lambda key: int(tags[key]) if tags.get(key, "").isdigit() else None  # noqa: E731
    return PastRun(
        run_id=run.info.run_id, status=run.info.status, name=run.info.run_name,
        test_loss=run.data.metrics.get("test/loss"), failure=tags.get(FAILURE_TAG), error=tags.get("error"),
        host=tags.get("vaelab.host"), pid=number("vaelab.pid"),
        logged_epochs={m.step for m in client.get_metric_history(run.info.run_id, "test/loss")},
        metric_keys=set(run.data.metrics), has_model=MODEL_TAG in tags, checkpoint_epoch=number("vaelab.checkpoint_epoch"))


def sweep_children(client: Any, parent_id: str) -> list[Any]:
    """The runs nested under a sweep's parent, by Hydra job number."""
    exp_id = client.get_run(parent_id).info.experiment_id
    children = client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return sorted(children, key=lambda r: int(r.data.tags.get("hydra.job.num", 0)))


def log_dataset(client: Any, run_id: str, name: str, digest: str, source: str, context: str) -> None:
    """A dataset input of the run: `name`, the folder it came from, the digest of the images as used."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}))
    client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])


def tag_digests(client: Any, run_id: str, paths: list[Path], tags: Mapping[str, str] | None = None) -> None:
    """`tags` and, for each file, its sha256 (tag `vaelab.sha256.<name>`), checked when it is read back."""
    from mlflow.entities import RunTag

    from vaelab.data.digest import sha256_file

    every = {**(tags or {}), **{DIGEST_TAG + path.name: sha256_file(path) for path in paths}}
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in every.items()])


def fetch_artifact(client: Any, run_id: str, path: str, dest: Path) -> Path | None:
    """The run's artifact `path`, downloaded into `dest` and checked (`verify`); None if it has none."""
    if not any(f.path == path for f in client.list_artifacts(run_id, str(Path(path).parent))):
        return None
    dest.mkdir(parents=True, exist_ok=True)
    local = Path(client.download_artifacts(run_id, path, str(dest)))
    verify(client.get_run(run_id).data.tags, run_id, path, local)
    return local


def verify(tags: Mapping[str, str], run_id: str, path: str, local: Path) -> None:
    """A CheckpointError unless `local` (the run's artifact `path`) has the sha256 its run's tag
    recorded (a run from before digests has no tag, and is not checked)."""
    from vaelab.data.digest import sha256_file
    from vaelab.errors import CheckpointError

    expected = tags.get(DIGEST_TAG + Path(path).name)
    if expected is not None and sha256_file(local) != expected:
        reason = f"run {run_id}'s {path} is not the file vaelab wrote (its sha256 differs from the run's tag)"
        raise CheckpointError(reason, reason=reason)


def route_library_logs(path: Path) -> None:
    """MLflow's, SQLAlchemy's and the HTTP client's log records (tracebacks of a busy or lost
    store among them) go to `path`, never the console: vaelab says what happened in one line."""
    global _records
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, delay=True, encoding="utf-8")
    except OSError:  # a home that cannot be written: the records are dropped, still not shown
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.removeHandler(_records)
        logger.addHandler(handler)
        logger.propagate = False
    if _records is not None:
        _records.close()
    _records = handler
