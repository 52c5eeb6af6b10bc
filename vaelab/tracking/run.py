"""One tracked training run: `MlflowTracker` (lifecycle, params, metrics, images, checkpoints,
the model, logged by the logging process, `remote`) and `NullTracker`, the same interface doing
nothing (`tracking=none`).

A tracker never costs the training: the store is reached before anything trains (an unreachable
or unwritable store is a one-line error), a busy store is waited for, and a store that fails
mid-run leaves the run training on, its checkpoints and metrics kept locally for a re-run to log.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vaelab.errors import TrackingError
from vaelab.tracking.links import run_link, ui_base
from vaelab.tracking.presentation import FIGURES, log_dataset, model_name, run_note, sweep_job_name, ui_hint
from vaelab.tracking.remote import Remote
from vaelab.tracking.store import use_experiment
from vaelab.tracking.worker import is_busy, short_error

log = logging.getLogger(__name__)
PARENT_ENV = "VAELAB_PARENT_RUN_ID"  # how the sweep callback hands its parent run to the jobs
IDENTITY_TAG = "vaelab.identity"  # vaelab.identity.config_identity of the run's config and code
FAILURE_TAG = "vaelab.failure"  # "error" when a run failed for a reason re-running would repeat
CHECKPOINT = "checkpoints/last.pt"  # where a run's latest checkpoint lives among its artifacts


@dataclass
class RunContext:
    """What Hydra knows about the job that the tracker records."""

    output_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)
    job_num: int | None = None
    sweep_dir: str | None = None
    parallel_jobs: int = 1  # jobs the launcher runs at once on this machine (joblib's n_jobs)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys: {"model": {"latent_dim": 2}} -> {"model.latent_dim": 2}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def run_name(cfg: DictConfig) -> str:
    """A readable name such as mlp-h256-z2-b1.0, unless tracking.run_name sets one."""
    if cfg.tracking.get("run_name"):
        return str(cfg.tracking.run_name)
    m = cfg.model
    width = f"-h{m.hidden_dim}" if "hidden_dim" in m else ""  # conv models have channels instead
    return f"{m.name}{width}-z{m.latent_dim}-b{float(cfg.loss.beta)}"


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


class NullTracker:
    """Tracking switched off: every call is accepted and dropped."""

    enabled = False
    run_id: str | None = None
    offline: str | None = None  # why logging stopped mid-run, if it did

    def __init__(self, **_: Any) -> None:
        pass

    def scope(self) -> str:
        """Where runs are looked up, as a short tag: checkpoints kept locally are filed under
        the config's identity and this, so that two stores never share one."""
        return "untracked"

    def connect(self, identity: str) -> Future:
        """Reach the store and look the identity up; the future's result is a PastRun or None."""
        done: Future = Future()
        done.set_result(None)
        return done

    @contextlib.contextmanager
    def start(self, cfg: DictConfig, context: RunContext | None = None, identity: str = "",
              resume: PastRun | None = None) -> Iterator[NullTracker]:
        yield self

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None: ...
    def log_plot(self, key: str, draw: Callable[..., Any], step: int | None = None, final: bool = False) -> None: ...
    def log_dataset(self, name: str, x: Any, source: str, context: str = "training") -> None: ...
    def log_model(self, model: Any, example: np.ndarray) -> None: ...
    def log_checkpoint(self, path: Path, epoch: int) -> None: ...

    def fetch_checkpoint(self, run_id: str, dest: Path) -> Path | None:
        return None

    def describe(self) -> str:
        return "tracking is off (tracking=none): nothing was logged"


class MlflowTracker(NullTracker):
    """One MLflow run per training job, logged by the logging process (`remote`).

    Every MLflow call (import, store set-up, the run itself, params, metrics, pictures, model)
    runs in order there, on one thread that owns the run, so training starts without waiting for
    MLflow, and per-epoch pictures are drawn, encoded and written on the other core while the next
    epoch trains, never holding the training process's GIL. A call that fails is retried for up to
    `patience_s` (a store locked by another writer costs waiting, not the run); if the store stays
    away, logging stops and training goes on. Leaving `start` waits for everything queued, then
    sets the run's final status.
    """

    enabled = True

    def __init__(
        self,
        uri: str | None = None,
        experiment: str = "vaelab",
        artifact_location: str | None = None,
        parent_run_id: str | None = None,
        log_model: bool = True,
        run_name: str | None = None,  # noqa: ARG002 - read from the config by `run_name`
        ui_url: str | None = None,
        connect_timeout_s: float = 5.0,
        patience_s: float = 120.0,
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.parent_run_id = parent_run_id or os.environ.get(PARENT_ENV) or None
        self.save_model = log_model
        self.ui_url = ui_url
        self.connect_timeout_s = connect_timeout_s
        self.patience_s = patience_s
        self.run_id: str | None = None
        self.name: str | None = None
        self._latest: dict[str, tuple[float, int, int]] = {}  # key -> (value, step, timestamp ms)
        self._command = "vaelab"
        self.experiment_id: str | None = None
        self._digests: list[threading.Thread] = []  # dataset digests being computed for log_dataset
        # vaelab retries on its own terms; MLflow's own HTTP retries would add minutes per call.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(connect_timeout_s / 2, 1))))
        self._worker = Remote(patience_s)  # after the environment above: the logging process gets it

    def scope(self) -> str:
        import hashlib

        return hashlib.sha256(f"{self.uri}\0{self.experiment}".encode()).hexdigest()[:8]

    @property
    def offline(self) -> str | None:  # type: ignore[override]
        return self._worker.offline

    def connect(self, identity: str) -> Future:
        """Reach the store (within `connect_timeout_s`; a busy store gets `patience_s`) and return
        the latest earlier run with this identity; runs in the logging process while the caller
        loads data."""
        found: Future = Future()

        def done(lookup: Future) -> None:
            if lookup.exception() is not None:
                found.set_exception(lookup.exception())
                return
            self.experiment_id, past = lookup.result()
            found.set_result(past)

        self._worker.call(_before_training, self._patience(), _lookup, self.uri, self.experiment,
                          self.artifact_location, identity).add_done_callback(done)
        return found

    def _patience(self) -> Patience:
        return Patience(self.uri, self.connect_timeout_s, self.patience_s)

    @contextlib.contextmanager
    def start(self, cfg: DictConfig, context: RunContext | None = None, identity: str = "",
              resume: PastRun | None = None) -> Iterator[MlflowTracker]:
        """Open the run (a new one, or `resume`'s, reopened) before yielding: a store that cannot
        be written fails here, before anything trains."""
        from vaelab.identity import code_digest

        params = flatten(OmegaConf.to_container(cfg, resolve=True))
        context = context or RunContext()
        self._command = " ".join(["vaelab", *context.overrides])
        tags = _context_tags(context) | {
            IDENTITY_TAG: identity, "vaelab.code": code_digest(),
            "vaelab.host": socket.gethostname(), "vaelab.pid": str(os.getpid()),
        }
        self.run_id, self.name = self._worker.call(
            _before_training, self._patience(), _open, run_name(cfg), params, tags, context,
            resume.run_id if resume else None, bool(cfg.tracking.get("run_name")), self.parent_run_id,
            self.experiment_id).result()
        self._worker.submit(_import_for_pictures)
        try:
            yield self
        except KeyboardInterrupt:
            self._abandon("KILLED")
            raise
        except BaseException as err:
            self._abandon("FAILED", f"{type(err).__name__}: {err}")
            raise
        else:
            self._finish()

    def _finish(self) -> None:
        """Wait for everything queued, then end the run FINISHED; if the store went away
        mid-run, say how to log what is kept locally."""
        for digest in self._digests:
            digest.join()
        self._worker.drain()
        if self.offline is None:
            self._worker.submit(_end_run_finished, self.note("FINISHED"), keep=True)
            self._worker.drain()
        self._worker.stop()
        if self.offline is not None:
            raise TrackingError(f"the tracking store failed mid-run ({self.offline}); training went on and "
                                "its checkpoint and metrics are kept locally: run the same command again "
                                "once the store is back to log them")

    def _abandon(self, status: str, error: str | None = None) -> None:
        """End the run KILLED or FAILED within seconds: pictures still queued are dropped (the
        checkpoint is already on disk), and the status is set from this thread."""
        from vaelab.signals import ignore_further

        if status == "KILLED":
            ignore_further()
        self._worker.discard_pending()
        self._worker.drain(timeout=3.0)
        if self.run_id is not None and self.offline is None:
            try:
                self._worker.now(_terminate, self.run_id, status, error, self.note(status, error)).result(60)
            except Exception as err:  # noqa: BLE001 - the run's own error is the one to report
                log.warning("could not mark MLflow run %s %s: %s", self.run_id, status, short_error(err))
        self._worker.stop(wait=False)

    def note(self, status: str, error: str | None = None) -> str:
        """The run's description: the command that reproduces it and its final results."""
        return run_note(self._command, self._latest, status, error)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._worker.submit(_mlflow, "log_params", _param_values(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        stamp = int(time.time() * 1000)  # kept, so the model's copy of a metric is the same row
        self._latest |= {k: (float(v), step or 0, stamp) for k, v in metrics.items()}
        self._worker.submit(_mlflow, "log_metrics", {k: float(v) for k, v in metrics.items()}, step=step,
                            timestamp=stamp)

    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None:
        self._worker.submit(_log_picture, image, key, step)

    def log_plot(self, key: str, draw: Callable[..., Any], step: int | None = None, final: bool = False) -> None:
        """Draw `draw(title=...)` in the logging process (so a picklable function of vaelab.plots,
        with its data bound: CPU tensors or arrays), titled with the run's name and the epoch:
        with a step, a keyed image for the slider; without one, or `final`, the run's figure
        `figures/<key>.png` (one drawing for both)."""
        self._worker.submit(_draw, key, draw, step, final, self.name or "")

    def log_dataset(self, name: str, x: Any, source: str, context: str = "training") -> None:
        """An MLflow dataset input: the Dataset column shows `name` and a digest of the images,
        computed on a thread here (hashing releases the GIL) rather than sending the images."""
        images = x.detach().cpu().numpy()

        def digest() -> None:
            self._worker.submit(log_dataset, name, hashlib.md5(images.tobytes()).hexdigest()[:8], source, context)

        self._digests.append(threading.Thread(target=digest, name="vaelab-digest", daemon=True))
        self._digests[-1].start()

    def log_model(self, model: Any, example: np.ndarray) -> None:
        """Log a CPU copy of the model under a name of its run, its final test metrics linked to it."""
        if self.save_model:
            final = {k: v for k, v in self._latest.items() if k.startswith("test/")}
            self._worker.submit(_log_model_linked, copy.deepcopy(model).cpu().eval(), example,
                                model_name(self.name or "model"), final)

    def log_checkpoint(self, path: Path, epoch: int) -> None:
        """Upload the checkpoint just written to `path` as the run's CHECKPOINT artifact, so any
        machine that reaches the store can resume the run. A hard link freezes this epoch's file
        while the next epoch replaces `path`."""
        snapshot = path.with_name(f".upload-{epoch}-{path.name}")
        snapshot.unlink(missing_ok=True)
        os.link(path, snapshot)
        self._worker.submit(_upload_checkpoint, snapshot, epoch, keep=True)

    def fetch_checkpoint(self, run_id: str, dest: Path) -> Path | None:
        """Download `run_id`'s checkpoint into `dest`; None if it has none."""
        return self._worker.call(_fetch_checkpoint, run_id, dest).result()

    def describe(self) -> str:
        link = run_link(ui_base(self.uri, self.ui_url), self.experiment_id, self.run_id)
        return f"MLflow run '{self.name}' ({self.run_id}) in experiment '{self.experiment}' ({self.uri}); {ui_hint(self.uri)}: {link}"


def _param_values(params: Mapping[str, Any]) -> dict[str, Any]:
    """MLflow drops None values: show them as the YAML spelling instead."""
    return {k: ("null" if v is None else v) for k, v in params.items()}


# What follows runs in the logging process, on the thread that owns the run: module-level
# functions with plain arguments, since calls travel there pickled.


@dataclass(frozen=True)
class Patience:
    """How long a store may take before anything trains: `connect_timeout_s` if unreachable or
    refusing writes, `patience_s` if busy."""

    uri: str | None
    connect_timeout_s: float
    patience_s: float


def _before_training(patience: Patience, fn: Any, *args: Any) -> Any:
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


def _lookup(uri: str | None, experiment: str, artifact_location: str | None,
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


def _open(name: str, params: dict[str, Any], tags: dict[str, str], context: RunContext, resume_id: str | None,
          named: bool, parent_run_id: str | None, experiment_id: str | None) -> tuple[str, str]:
    """Start the run (or reopen `resume_id`) on this thread; return its id and name."""
    import mlflow

    if parent_run_id and not named and resume_id is None:  # a sweep's job: named by what it varies
        name = sweep_job_name(mlflow.get_run(parent_run_id).data.tags.get("overrides", ""),
                              context.overrides) or name
    if mlflow.active_run() is None:  # retried calls must not open a second run
        if resume_id is not None:  # the same run continues: same id, metrics go on at later steps
            mlflow.start_run(run_id=resume_id, tags=tags | {"vaelab.resumed": "true"})
        else:
            mlflow.start_run(experiment_id=experiment_id, run_name=name,
                             parent_run_id=parent_run_id, tags=tags)
    run_id = mlflow.active_run().info.run_id
    name = mlflow.active_run().info.run_name or name
    if resume_id is None:
        mlflow.log_params(_param_values(params))
    if context.output_dir is not None and (context.output_dir / ".hydra").is_dir():
        mlflow.log_artifacts(str(context.output_dir / ".hydra"), artifact_path="hydra")
    return run_id, name


def _import_for_pictures() -> None:
    """Import matplotlib while the first epoch trains, not when its pictures are due. Torch is
    imported here only to log the model, at the end: in the first seconds of training it would
    take more from the training threads (4 s of CPU) than it saves the wrap-up."""
    import matplotlib.backends.backend_agg  # noqa: F401


def _mlflow(name: str, *args: Any, **kwargs: Any) -> Any:
    """mlflow.<name>(...) on the thread whose active run is this run."""
    import mlflow

    return getattr(mlflow, name)(*args, **kwargs)


def _draw(key: str, draw: Callable[..., Any], step: int | None, final: bool, name: str) -> None:
    """Draw a figure and log its pixels (the figure's dpi, as savefig would): with a step, a keyed
    image titled with the epoch; without one, or `final`, the run's figure."""
    from vaelab.plots import figure_to_array

    image = figure_to_array(draw(title=name if step is None else f"{name} · epoch {step}"))
    if step is not None:
        _log_picture(image, key, step)
    if step is None or final:
        _log_picture(image, key, None)


def _log_model_linked(model: Any, example: np.ndarray, name: str, final: dict[str, tuple[float, int, int]]) -> None:
    """Log the model, and link the run's final test metrics to it (the same rows: not duplicated)."""
    import mlflow

    info = _log_model(model, example, name)
    for key, (value, step, stamp) in final.items():
        mlflow.log_metric(key, value, step=step, timestamp=stamp, model_id=info.model_id)


def _fetch_checkpoint(run_id: str, dest: Path) -> Path | None:
    from mlflow import MlflowClient

    client = MlflowClient()
    if not any(f.path == CHECKPOINT for f in client.list_artifacts(run_id, "checkpoints")):
        return None
    dest.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, CHECKPOINT, str(dest)))


def _log_picture(image: np.ndarray, key: str, step: int | None) -> None:
    """An RGB or grey array into the worker's active run: with a step, a keyed image (the UI's
    Image grid, with a step slider); without one, the figure `figures/<key>.png`, never into
    images/, since the UI drops all keyed images if one file there is not its own."""
    import mlflow

    if step is None:
        mlflow.log_image(image, artifact_file=f"{FIGURES}/{key}.png")
    else:
        mlflow.log_image(image, key=key, step=step)


def _end_run_finished(note: str) -> None:
    """End the worker's active run FINISHED, its description set (a failed or killed run is
    ended at once, beside the queue, by `_terminate`)."""
    import mlflow

    mlflow.set_tag("mlflow.note.content", note)
    mlflow.end_run(status="FINISHED")


def _terminate(run_id: str, status: str, error: str | None, note: str | None = None) -> None:
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


def _upload_checkpoint(snapshot: Path, epoch: int) -> None:
    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            named = Path(tmp) / Path(CHECKPOINT).name
            os.link(snapshot, named)
            mlflow.log_artifact(str(named), artifact_path=str(Path(CHECKPOINT).parent))
        mlflow.set_tag("vaelab.checkpoint_epoch", str(epoch))
    finally:
        snapshot.unlink(missing_ok=True)


def _log_model(model: Any, example: np.ndarray, name: str = "model") -> Any:
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



def _context_tags(context: RunContext) -> dict[str, str]:
    tags = {"overrides": " ".join(context.overrides) or "(none)"}
    if context.job_num is not None:
        tags["hydra.job.num"] = str(context.job_num)
    if context.sweep_dir:
        tags["hydra.sweep.dir"] = context.sweep_dir
    return tags


