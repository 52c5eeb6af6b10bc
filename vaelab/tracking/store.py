"""The MLflow store: reaching it (a client for an explicit tracking URI, never a process-wide one),
experiments, looking runs up and reading them back, and where MLflow's own log records go."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.tracking.base import PastRun

try:
    import fcntl
except ImportError:  # Windows: no lock, as MLflow itself
    fcntl = None  # type: ignore[assignment]

IDENTITY_TAG = "vaelab.identity"  # vaelab.identity.config_identity of the run's config and code
FAILURE_TAG = "vaelab.failure"  # "error" when a run failed for a reason re-running would repeat
MODEL_TAG = "vaelab.model_id"  # the run's logged model, once it is logged
WEIGHTS = "vaelab/weights.pt"  # in the logged model: its state_dict, read with weights_only=True
SPEC = "vaelab/spec.json"  # beside it: the model and likelihood configs that rebuild it
DIGEST_TAG = "vaelab.sha256."  # + a file's name: its sha256 when vaelab wrote it
LIBRARY_LOGGERS = ("mlflow", "sqlalchemy", "alembic", "urllib3", "vaelab.tracking.detail")


@contextlib.contextmanager
def opening(uri: str | None) -> Iterator[None]:
    """Hold the SQLite store `uri` for this process alone while it opens it. The first process
    to open a new store creates its tables through MLflow's migrations, which do not survive a
    second process doing the same at once ("duplicate column name", "no such index"): the others
    wait on `<store>.lock` until it is done. Other stores (a server, PostgreSQL) pass through."""
    path = sqlite_path(uri)
    try:
        lock = None if path is None or fcntl is None else open(path.with_name(path.name + ".lock"), "a")
    except FileNotFoundError:  # a new home: its folder is made here, so that the lock can be taken
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "a")
    except OSError:  # a folder that cannot be written: opening the store says why
        lock = None
    if lock is None:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def sqlite_path(uri: str | None) -> Path | None:
    """The database file of a `sqlite:///` tracking URI; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri and uri.startswith("sqlite:///") else None


def connect(uri: str) -> Any:
    """An `MlflowClient` for `uri`, its store opened (a new SQLite store's tables made) under the lock."""
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # MLflow's records go where vaelab says
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # downloads are vaelab's business
    from mlflow import MlflowClient

    with opening(uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    return client


def reach(uri: str, timeout_s: float = 5.0) -> Any:
    """`connect` for a command that only reads or annotates runs: a store it cannot reach within
    `timeout_s` is a one-line TrackingError, the libraries' records in `tracking.log` of the home."""
    from vaelab.paths import home
    from vaelab.tracking.worker import until_usable

    if _Records.handler is None:
        route_library_logs(home() / "tracking.log")
    retry_on_our_terms(timeout_s)
    return until_usable(uri, timeout_s, timeout_s, connect, uri)


def retry_on_our_terms(timeout_s: float) -> None:
    """vaelab retries a store on its own terms (`worker.until_usable`, `Worker`); MLflow's own HTTP
    retries would add minutes per call. Set once per process, unless the user set them."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(timeout_s / 2, 1))))


def settle(uri: str) -> None:
    """Leave a SQLite store with its tables made, for a process that opens it without `opening`
    (`mlflow server`): a new store is created here, under the lock; for an existing one, this
    waits until a run that is creating its tables has done so."""
    if sqlite_path(uri) is not None and sqlite_path(uri).parent.is_dir():
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


def find_run(client: Any, experiment_id: str, identity: str) -> PastRun | None:
    """The latest run in the experiment with this identity."""
    found = client.search_runs([experiment_id], f"tags.`{IDENTITY_TAG}` = '{identity}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        return None
    run, tags = found[0], found[0].data.tags
    return PastRun(
        run_id=run.info.run_id, status=run.info.status, name=run.info.run_name,
        test_loss=run.data.metrics.get("test/loss"), failure=tags.get(FAILURE_TAG), error=tags.get("error"),
        host=tags.get("vaelab.host"), pid=int(tags["vaelab.pid"]) if tags.get("vaelab.pid", "").isdigit() else None,
        logged_epochs={m.step for m in client.get_metric_history(run.info.run_id, "test/loss")},
        metric_keys=set(run.data.metrics), has_model=MODEL_TAG in tags,
        checkpoint_epoch=int(tags["vaelab.checkpoint_epoch"]) if tags.get("vaelab.checkpoint_epoch", "").isdigit()
        else None)


def sweep_children(client: Any, parent_id: str) -> list[Any]:
    """The runs nested under a sweep's parent, by Hydra job number."""
    exp_id = client.get_run(parent_id).info.experiment_id
    children = client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return sorted(children, key=lambda r: int(r.data.tags.get("hydra.job.num", 0)))


def lookup(client: Any, experiment: str, identity: str) -> PastRun | None:
    """`find_run` in the experiment named `experiment`, changing nothing (no experiment: None)."""
    found = client.get_experiment_by_name(experiment)
    return find_run(client, found.experiment_id, identity) if found is not None else None


def log_dataset(client: Any, run_id: str, name: str, images: Any, source: str, context: str) -> None:
    """A dataset input of the run: `name`, the folder it came from, a digest of the images as used."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    digest = hashlib.md5(np.ascontiguousarray(images).data).hexdigest()[:8]  # releases the GIL
    dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}))
    client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])


def write_weights(folder: Path, model: Any, spec: Mapping[str, Any]) -> None:
    """Beside a model MLflow saved in `folder`: its state_dict and the configs that rebuild it."""
    import torch

    (folder / SPEC).parent.mkdir(parents=True, exist_ok=True)
    (folder / SPEC).write_text(json.dumps(spec, indent=1))
    torch.save(model.state_dict(), folder / WEIGHTS)


def tag_digests(client: Any, run_id: str, paths: list[Path], tags: Mapping[str, str] | None = None) -> None:
    """`tags` and, for each file, its sha256 (tag `vaelab.sha256.<name>`), checked when it is read back."""
    from mlflow.entities import RunTag

    from vaelab.data.digest import sha256_file

    every = {**(tags or {}), **{DIGEST_TAG + path.name: sha256_file(path) for path in paths}}
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in every.items()])


def fetch_artifact(client: Any, run_id: str, path: str, dest: Path, check: bool = False) -> Path | None:
    """Download the run's artifact `path` into `dest`; None if the run has none there. With
    `check`, a file whose sha256 is not the one vaelab recorded when it wrote it is a
    CheckpointError naming the run and the file (a run from before digests is not checked)."""
    if not any(f.path == path for f in client.list_artifacts(run_id, str(Path(path).parent))):
        return None
    dest.mkdir(parents=True, exist_ok=True)
    local = Path(client.download_artifacts(run_id, path, str(dest)))
    if check:
        verify(client.get_run(run_id).data.tags, run_id, path, local)
    return local


def verify(tags: Mapping[str, str], run_id: str, path: str, local: Path) -> None:
    """`local` (the run's artifact `path`) has the digest its run's tag recorded, or no tag exists."""
    from vaelab.data.digest import sha256_file
    from vaelab.errors import CheckpointError

    expected = tags.get(DIGEST_TAG + Path(path).name)
    if expected is not None and sha256_file(local) != expected:
        reason = f"run {run_id}'s {path} is not the file vaelab wrote (its sha256 differs from the run's tag)"
        raise CheckpointError(reason, reason=reason)


class _Records:
    handler: logging.Handler | None = None


def route_library_logs(path: Path) -> None:
    """MLflow's, SQLAlchemy's and the HTTP client's log records (tracebacks of a busy or lost
    store among them) go to `path`, never the console: vaelab says what happened in one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, delay=True, encoding="utf-8")
    except OSError:  # a home that cannot be written: the records are dropped, still not shown
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _Records.handler is not None:
            logger.removeHandler(_Records.handler)
        logger.addHandler(handler)
        logger.propagate = False
    if _Records.handler is not None:
        _Records.handler.close()
    _Records.handler = handler


def logged_config(uri: str, run_id: str) -> tuple[Any, str, list[str]]:
    """A run (its entity), its logged config (Hydra's `config.yaml`, as text) and its overrides."""
    import tempfile

    import yaml
    from mlflow.exceptions import MlflowException

    from vaelab.errors import ConfigError

    client = reach(uri)
    try:
        run = client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(client.download_artifacts(run_id, "hydra/config.yaml", tmp)).read_text()
            overrides = yaml.safe_load(Path(client.download_artifacts(run_id, "hydra/overrides.yaml", tmp)).read_text())
    except MlflowException as err:
        raise ConfigError(f"run {run_id}: no such run with a logged config in {uri} ({err.message[:160]})") from None
    return run, config, list(overrides or [])


def set_tags(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    client = reach(uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def log_to_run(uri: str, run_id: str, metrics: Mapping[str, float], params: Mapping[str, Any] | None = None) -> None:
    """Add metrics (and params not yet set) to a finished run, keeping its status."""
    client = connect(uri)
    logged = client.get_run(run_id).data.params
    for key, value in (params or {}).items():
        if key not in logged:  # MLflow params are write-once; a second k lives in the metric name
            client.log_param(run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)


def load_run(uri: str, run_id: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """A run's logged model as its spec (the configs that rebuild it), its weights (on the CPU,
    read with `weights_only=True`, checked against the digest logged with them) and the run's
    config (flattened). Nothing from the store is unpickled: MLflow's pickled model is never read."""
    import json
    import tempfile

    import mlflow.artifacts
    import torch
    from mlflow.exceptions import MlflowException

    from vaelab.errors import CheckpointError, ConfigError
    from vaelab.tracking.presentation import run_config

    try:
        client = connect(uri)
        run = client.get_run(run_id)
        outputs = run.outputs.model_outputs if run.outputs else []
        if not outputs:
            raise ConfigError(f"run_id={run_id}: the run has no logged model")
        location = client.get_logged_model(outputs[-1].model_id).artifact_location  # its last one
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            try:
                for name in (SPEC, WEIGHTS):
                    mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{name}", dst_path=str(folder),
                                                        tracking_uri=uri)
            except MlflowException:
                raise ConfigError(
                    f"run_id={run_id}: its model was logged without {WEIGHTS}, and vaelab does not unpickle "
                    f"a store's files; if you trust this store: mlflow.pytorch.load_model('{location}')") from None
            for name in (SPEC, WEIGHTS):
                verify(run.data.tags, run_id, name, folder / Path(name).name)
            spec = json.loads((folder / Path(SPEC).name).read_text())
            try:
                weights = torch.load(folder / Path(WEIGHTS).name, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - a pickle with code in it is refused here
                raise ConfigError(f"run_id={run_id}: its {WEIGHTS} is not plain weights "
                                  f"({type(err).__name__}); refused") from None
    except MlflowException as err:
        raise ConfigError(f"run_id={run_id}: no such run with a logged model in {uri} ({err.message[:200]})") from None
    except CheckpointError as err:
        raise ConfigError(str(err)) from None
    return spec, weights, run_config(run)
