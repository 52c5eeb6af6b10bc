"""One tracked training run: `MlflowTracker` (lifecycle, params, metrics, images, checkpoints,
the model, logged by the logging process, `remote`, which runs the functions of `calls`) and
`NullTracker`, the same interface doing nothing (`tracking=none`).

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
from vaelab.tracking import calls
from vaelab.tracking.calls import PastRun
from vaelab.tracking.links import run_link, ui_base
from vaelab.tracking.presentation import log_dataset, model_name, run_note, ui_hint
from vaelab.tracking.remote import Remote
from vaelab.tracking.worker import short_error

log = logging.getLogger(__name__)
PARENT_ENV = "VAELAB_PARENT_RUN_ID"  # how the sweep callback hands its parent run to the jobs


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

        self._worker.call(calls.before_training, self._patience(), calls.lookup, self.uri, self.experiment,
                          self.artifact_location, identity).add_done_callback(done)
        return found

    def _patience(self) -> calls.Patience:
        return calls.Patience(self.uri, self.connect_timeout_s, self.patience_s)

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
            calls.IDENTITY_TAG: identity, "vaelab.code": code_digest(),
            "vaelab.host": socket.gethostname(), "vaelab.pid": str(os.getpid()),
        }
        self.run_id, self.name = self._worker.call(
            calls.before_training, self._patience(), calls.open_run, run_name(cfg), params, tags,
            context.overrides, context.output_dir, resume.run_id if resume else None,
            bool(cfg.tracking.get("run_name")), self.parent_run_id, self.experiment_id).result()
        self._worker.submit(calls.import_for_pictures)
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
            self._worker.submit(calls.end_run_finished, self.note("FINISHED"), keep=True)
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
                self._worker.now(calls.terminate, self.run_id, status, error, self.note(status, error)).result(60)
            except Exception as err:  # noqa: BLE001 - the run's own error is the one to report
                log.warning("could not mark MLflow run %s %s: %s", self.run_id, status, short_error(err))
        self._worker.stop(wait=False)

    def note(self, status: str, error: str | None = None) -> str:
        """The run's description: the command that reproduces it and its final results."""
        return run_note(self._command, self._latest, status, error)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._worker.submit(calls.mlflow_call, "log_params", calls.param_values(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        stamp = int(time.time() * 1000)  # kept, so the model's copy of a metric is the same row
        self._latest |= {k: (float(v), step or 0, stamp) for k, v in metrics.items()}
        self._worker.submit(calls.mlflow_call, "log_metrics", {k: float(v) for k, v in metrics.items()}, step=step,
                            timestamp=stamp)

    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None:
        self._worker.submit(calls.log_picture, image, key, step)

    def log_plot(self, key: str, draw: Callable[..., Any], step: int | None = None, final: bool = False) -> None:
        """Draw `draw(title=...)` in the logging process (so a picklable function of vaelab.plots,
        with its data bound: CPU tensors or arrays), titled with the run's name and the epoch:
        with a step, a keyed image for the slider; without one, or `final`, the run's figure
        `figures/<key>.png` (one drawing for both)."""
        self._worker.submit(calls.draw, key, draw, step, final, self.name or "")

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
            self._worker.submit(calls.log_model_linked, copy.deepcopy(model).cpu().eval(), example,
                                model_name(self.name or "model"), final)

    def log_checkpoint(self, path: Path, epoch: int) -> None:
        """Upload the checkpoint just written to `path` as the run's CHECKPOINT artifact, so any
        machine that reaches the store can resume the run. A hard link freezes this epoch's file
        while the next epoch replaces `path`."""
        snapshot = path.with_name(f".upload-{epoch}-{path.name}")
        snapshot.unlink(missing_ok=True)
        os.link(path, snapshot)
        self._worker.submit(calls.upload_checkpoint, snapshot, epoch, keep=True)

    def fetch_checkpoint(self, run_id: str, dest: Path) -> Path | None:
        """Download `run_id`'s checkpoint into `dest`; None if it has none."""
        return self._worker.call(calls.fetch_checkpoint, run_id, dest).result()

    def describe(self) -> str:
        link = run_link(ui_base(self.uri, self.ui_url), self.experiment_id, self.run_id)
        return f"MLflow run '{self.name}' ({self.run_id}) in experiment '{self.experiment}' ({self.uri}); {ui_hint(self.uri)}: {link}"


def _context_tags(context: RunContext) -> dict[str, str]:
    tags = {"overrides": " ".join(context.overrides) or "(none)"}
    if context.job_num is not None:
        tags["hydra.job.num"] = str(context.job_num)
    if context.sweep_dir:
        tags["hydra.sweep.dir"] = context.sweep_dir
    return tags


