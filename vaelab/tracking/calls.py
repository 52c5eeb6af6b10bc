"""What a tracked run asks of the logging process (`remote`): module-level functions with plain
arguments, since calls travel there pickled, each run there in order on the thread that owns the
run (its MLflow active run). `run.MlflowTracker` is the side that asks."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.errors import TrackingError
from vaelab.tracking.presentation import FIGURES, sweep_job_name
from vaelab.tracking.store import use_experiment
from vaelab.tracking.worker import is_busy, short_error

IDENTITY_TAG = "vaelab.identity"  # vaelab.identity.config_identity of the run's config and code
FAILURE_TAG = "vaelab.failure"  # "error" when a run failed for a reason re-running would repeat
CHECKPOINT = "checkpoints/last.pt"  # where a run's latest checkpoint lives among its artifacts


@dataclass
class PastRun:
    """What the store holds of an earlier run with the same identity."""

    run_id: str
    status: str  # RUNNING, FINISHED, FAILED or KILLED
    name: str
    test_loss: float | None = None
    failure: str | None = None  # the FAILURE_TAG, e.g. "error"
    error: str | None = None
    host: str | None = None
    pid: int | None = None
    logged_epochs: set[int] = field(default_factory=set)  # steps of test/loss already in the store

    def process_alive(self) -> bool:
        """Whether the process that owns a RUNNING run still exists (only knowable on its host)."""
        from vaelab.signals import alive

        return self.host == socket.gethostname() and self.pid is not None and alive(self.pid)


def param_values(params: Mapping[str, Any]) -> dict[str, Any]:
    """MLflow drops None values: show them as the YAML spelling instead."""
    return {k: ("null" if v is None else v) for k, v in params.items()}


@dataclass(frozen=True)
class Patience:
    """How long a store may take before anything trains: `connect_timeout_s` if unreachable or
    refusing writes, `patience_s` if busy."""

    uri: str | None
    connect_timeout_s: float
    patience_s: float


def before_training(patience: Patience, fn: Any, *args: Any) -> Any:
    """Call `fn` until it succeeds: a store that is unreachable or refuses writes for
    `connect_timeout_s` is an error (nothing has trained yet); a busy one gets `patience_s`."""
    started = time.monotonic()
    while True:
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - anything here means the store is not usable
            waited = time.monotonic() - started
            if waited > (patience.patience_s if is_busy(err) else patience.connect_timeout_s):
                raise TrackingError(f"the tracking store {patience.uri} cannot be reached or written: "
                                    f"{short_error(err)}; check tracking.uri") from None
            time.sleep(0.5)


def lookup(uri: str | None, experiment: str, artifact_location: str | None,
            identity: str) -> tuple[str, PastRun | None]:
    """The experiment's id, and the latest run in it with this identity."""
    from mlflow import MlflowClient

    experiment_id = use_experiment(uri, experiment, artifact_location)
    client = MlflowClient()
    found = client.search_runs([experiment_id], f"tags.`{IDENTITY_TAG}` = '{identity}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        return experiment_id, None
    run = found[0]
    tags = run.data.tags
    logged = {m.step for m in client.get_metric_history(run.info.run_id, "test/loss")}
    return experiment_id, PastRun(
        run_id=run.info.run_id, status=run.info.status, name=run.info.run_name,
        test_loss=run.data.metrics.get("test/loss"), failure=tags.get(FAILURE_TAG), error=tags.get("error"),
        host=tags.get("vaelab.host"), pid=int(tags["vaelab.pid"]) if tags.get("vaelab.pid", "").isdigit() else None,
        logged_epochs=logged)


def open_run(name: str, params: dict[str, Any], tags: dict[str, str], overrides: list[str], output_dir: Path | None,
             resume_id: str | None, named: bool, parent_run_id: str | None,
             experiment_id: str | None) -> tuple[str, str]:
    """Start the run (or reopen `resume_id`) on this thread, with the job's Hydra config from
    `output_dir`; return its id and name."""
    import mlflow

    if parent_run_id and not named and resume_id is None:  # a sweep's job: named by what it varies
        name = sweep_job_name(mlflow.get_run(parent_run_id).data.tags.get("overrides", ""),
                              overrides) or name
    if mlflow.active_run() is None:  # retried calls must not open a second run
        if resume_id is not None:  # the same run continues: same id, metrics go on at later steps
            mlflow.start_run(run_id=resume_id, tags=tags | {"vaelab.resumed": "true"})
        else:
            mlflow.start_run(experiment_id=experiment_id, run_name=name,
                             parent_run_id=parent_run_id, tags=tags)
    run_id = mlflow.active_run().info.run_id
    name = mlflow.active_run().info.run_name or name
    if resume_id is None:
        mlflow.log_params(param_values(params))
    if output_dir is not None and (output_dir / ".hydra").is_dir():
        mlflow.log_artifacts(str(output_dir / ".hydra"), artifact_path="hydra")
    return run_id, name


def import_for_pictures() -> None:
    """Import matplotlib while the first epoch trains, not when its pictures are due. Torch is
    imported here only to log the model, at the end: in the first seconds of training it would
    take more from the training threads (4 s of CPU) than it saves the wrap-up."""
    import matplotlib.backends.backend_agg  # noqa: F401


def mlflow_call(name: str, *args: Any, **kwargs: Any) -> Any:
    """mlflow.<name>(...) on the thread whose active run is this run."""
    import mlflow

    return getattr(mlflow, name)(*args, **kwargs)


def draw(key: str, figure: Callable[..., Any], step: int | None, final: bool, name: str) -> None:
    """Draw `figure(title=...)` and log its pixels (the figure's dpi, as savefig would): with a
    step, a keyed image titled with the epoch; without one, or `final`, the run's figure."""
    from vaelab.plots import figure_to_array

    image = figure_to_array(figure(title=name if step is None else f"{name} · epoch {step}"))
    if step is not None:
        log_picture(image, key, step)
    if step is None or final:
        log_picture(image, key, None)


def log_model_linked(model: Any, example: np.ndarray, name: str, final: dict[str, tuple[float, int, int]]) -> None:
    """Log the model, and link the run's final test metrics to it (the same rows: not duplicated)."""
    import mlflow

    info = log_model(model, example, name)
    for key, (value, step, stamp) in final.items():
        mlflow.log_metric(key, value, step=step, timestamp=stamp, model_id=info.model_id)


def fetch_checkpoint(run_id: str, dest: Path) -> Path | None:
    from mlflow import MlflowClient

    client = MlflowClient()
    if not any(f.path == CHECKPOINT for f in client.list_artifacts(run_id, "checkpoints")):
        return None
    dest.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, CHECKPOINT, str(dest)))


def log_picture(image: np.ndarray, key: str, step: int | None) -> None:
    """An RGB or grey array into the worker's active run: with a step, a keyed image (the UI's
    Image grid, with a step slider); without one, the figure `figures/<key>.png`, never into
    images/, since the UI drops all keyed images if one file there is not its own. Keyed images
    are written here, not by MLflow's own background queue (its default): the worker already
    keeps them off the training path, retries them, and knows when they are stored; and that
    queue, once started, holds the process ~1 s at exit."""
    import mlflow

    if step is None:
        mlflow.log_image(image, artifact_file=f"{FIGURES}/{key}.png")
    else:
        mlflow.log_image(image, key=key, step=step, synchronous=True)


def end_run_finished(note: str) -> None:
    """End the worker's active run FINISHED, its description set (a failed or killed run is
    ended at once, beside the queue, by `terminate`)."""
    import mlflow

    mlflow.set_tag("mlflow.note.content", note)
    mlflow.end_run(status="FINISHED")


def terminate(run_id: str, status: str, error: str | None, note: str | None = None) -> None:
    """End a run from any thread. FAILED runs are tagged as real errors, which a re-run repeats
    only when asked; KILLED runs (signals) are resumed."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if note:
        client.set_tag(run_id, "mlflow.note.content", note)
    if error:
        client.set_tag(run_id, "error", error[:5000])
    if status == "FAILED":
        client.set_tag(run_id, FAILURE_TAG, "error")
    client.set_terminated(run_id, status=status)


def upload_checkpoint(snapshot: Path, epoch: int) -> None:
    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            named = Path(tmp) / Path(CHECKPOINT).name
            os.link(snapshot, named)
            mlflow.log_artifact(str(named), artifact_path=str(Path(CHECKPOINT).parent))
        mlflow.set_tag("vaelab.checkpoint_epoch", str(epoch))
    finally:
        snapshot.unlink(missing_ok=True)


def log_model(model: Any, example: np.ndarray, name: str = "model") -> Any:
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    logging.getLogger("mlflow.pytorch").addFilter(_KnownWarnings())
    logging.getLogger("mlflow.models.model").addFilter(_KnownWarnings())
    with torch.no_grad():
        logits = model(torch.from_numpy(example)).logits.numpy()
    with _requirements_unchecked():
        return mlflow.pytorch.log_model(
            model,
            name=name,
            signature=infer_signature(example, logits),
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "vaelab"],
            serialization_format="pickle",  # a plain nn.Module back from load_model
        )


@contextlib.contextmanager
def _requirements_unchecked() -> Iterator[None]:
    """Skip MLflow's check of the model's pip requirements against the installed packages while
    a model is logged (once on saving, once more on loading it back to validate the input example).
    Each check first maps every installed distribution to its modules
    (`importlib.metadata.packages_distributions`: about 1.6 s of every run's wrap-up here), and it
    cannot fail for ours: they are read from this very environment. Under an MLflow without this
    hook, nothing is skipped."""
    from mlflow.utils import requirements_utils

    check = getattr(requirements_utils, "_check_requirement_satisfied", None)
    if check is None:
        yield
        return
    requirements_utils._check_requirement_satisfied = lambda requirement: None  # noqa: SLF001
    try:
        yield
    finally:
        requirements_utils._check_requirement_satisfied = check  # noqa: SLF001


class _KnownWarnings(logging.Filter):
    """Drop two MLflow warnings that do not apply to a VAE logged for `mlflow.pytorch.load_model`.

    Its advice to save as pt2 (torch.export gives back a graph, not the VAE class), and its failed
    pyfunc serving check (pyfunc wants one output tensor; the VAE returns logits, mu, logvar, z).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "serialization_format" not in message and "validate serving input" not in message
