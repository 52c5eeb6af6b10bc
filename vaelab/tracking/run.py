"""One tracked training run: `MlflowTracker` (lifecycle, params, metrics, images, model, logged
from a background thread) and `NullTracker`, the same interface doing nothing (`tracking=none`)."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vaelab.errors import TrackingError
from vaelab.tracking.store import use_experiment

PARENT_ENV = "VAELAB_PARENT_RUN_ID"  # how the sweep callback hands its parent run to the jobs


@dataclass
class RunContext:
    """What Hydra knows about the job that the tracker records."""

    output_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)
    job_num: int | None = None
    sweep_dir: str | None = None


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

    def __init__(self, **_: Any) -> None:
        pass

    @contextlib.contextmanager
    def start(self, cfg: DictConfig, context: RunContext | None = None) -> Iterator[NullTracker]:
        yield self

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None: ...
    def log_figure(self, figure: Any, name: str) -> None: ...
    def log_model(self, model: Any, example: np.ndarray) -> None: ...

    def describe(self) -> str:
        return "tracking is off (tracking=none): nothing was logged"


class MlflowTracker(NullTracker):
    """One MLflow run per training job, logged from a background thread.

    Every MLflow call (import, store set-up, the run itself, params, metrics, images, model) runs
    in order on one worker thread that owns the run, so training starts without waiting for MLflow
    and per-epoch pictures are encoded and written while the next epoch trains. Leaving `start`
    waits for everything queued, then sets the run's final status.
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
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.parent_run_id = parent_run_id or os.environ.get(PARENT_ENV) or None
        self.save_model = log_model
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._worker: _Worker | None = None

    @contextlib.contextmanager
    def start(self, cfg: DictConfig, context: RunContext | None = None) -> Iterator[MlflowTracker]:
        params = flatten(OmegaConf.to_container(cfg, resolve=True))
        self._worker = _Worker()
        self._worker.submit(self._open, run_name(cfg), params, context or RunContext())
        try:
            yield self
        except KeyboardInterrupt:
            self._close("KILLED")
            raise
        except BaseException as err:
            self._close("FAILED", f"{type(err).__name__}: {err}")
            raise
        else:
            self._close("FINISHED")

    def _open(self, name: str, params: dict[str, Any], context: RunContext) -> None:
        import mlflow

        self.experiment_id = use_experiment(self.uri, self.experiment, self.artifact_location)
        run = mlflow.start_run(experiment_id=self.experiment_id, run_name=name,
                               parent_run_id=self.parent_run_id, tags=_context_tags(context))
        self.run_id = run.info.run_id
        mlflow.log_params(_param_values(params))
        if context.output_dir is not None and (context.output_dir / ".hydra").is_dir():
            mlflow.log_artifacts(str(context.output_dir / ".hydra"), artifact_path="hydra")

    def _close(self, status: str, error: str | None = None) -> None:
        """Wait for everything queued, then end the run; a logging failure fails the run."""
        worker, self._worker = self._worker, None
        failure = worker.drain()
        logging_failed = failure is not None and status == "FINISHED"  # else the run's own error wins
        if logging_failed:
            status, error = "FAILED", _logging_failure(failure)
        if self.run_id is not None:
            worker.submit(_end_run, status, error)
            worker.drain()
        worker.stop()
        if logging_failed:
            raise TrackingError(error) from failure

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._worker.submit(_fluent("log_params"), _param_values(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._worker.submit(_fluent("log_metrics"), dict(metrics), step=step)

    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None:
        if step is None:
            self._worker.submit(_fluent("log_image"), image, artifact_file=f"images/{key}.png")
        else:  # the UI shows keyed images with a step slider
            self._worker.submit(_fluent("log_image"), image, key=key, step=step)

    def log_figure(self, figure: Any, name: str) -> None:
        self._worker.submit(_fluent("log_figure"), figure, f"images/{name}.png")

    def log_model(self, model: Any, example: np.ndarray) -> None:
        """Log a CPU copy of the model; `mlflow.pytorch.load_model("runs:/<id>/model")` gets it back."""
        if self.save_model:
            self._worker.submit(_log_model, copy.deepcopy(model).cpu().eval(), example)

    def describe(self) -> str:
        return (
            f"MLflow run {self.run_id} in experiment '{self.experiment}' ({self.uri});"
            f" open the UI with `make ui` and go to http://127.0.0.1:5000"
            f"/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        )


def _param_values(params: Mapping[str, Any]) -> dict[str, Any]:
    """MLflow drops None values: show them as the YAML spelling instead."""
    return {k: ("null" if v is None else v) for k, v in params.items()}


def _fluent(name: str) -> Any:
    """mlflow.<name>, resolved in the worker thread (whose active run is this tracker's)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        import mlflow

        return getattr(mlflow, name)(*args, **kwargs)
    return call


def _end_run(status: str, error: str | None) -> None:
    import mlflow

    if error:
        mlflow.set_tag("error", error[:5000])
    mlflow.end_run(status=status)


def _log_model(model: Any, example: np.ndarray) -> None:
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    logging.getLogger("mlflow.pytorch").addFilter(_KnownWarnings())
    logging.getLogger("mlflow.models.model").addFilter(_KnownWarnings())
    with torch.no_grad():
        logits = model(torch.from_numpy(example)).logits.numpy()
    mlflow.pytorch.log_model(
        model,
        name="model",
        signature=infer_signature(example, logits),
        input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "vaelab"],
        serialization_format="pickle",  # a plain nn.Module back from load_model
    )


def _logging_failure(failure: BaseException) -> str:
    return f"MLflow logging failed: {type(failure).__name__}: {failure}"


class _Worker:
    """One thread running submitted calls in order. After a failure it skips the rest of the
    queue, and `drain` hands the failure back to the caller's thread."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="vaelab-mlflow", daemon=True)
        self._thread.start()

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Queue a call; if an earlier one failed, raise that here instead of logging on blindly."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise TrackingError(_logging_failure(failure)) from failure
        self._queue.put((fn, args, kwargs))

    def drain(self) -> BaseException | None:
        self._queue.join()
        failure, self._failure = self._failure, None
        return failure

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args, kwargs = item
            try:
                if self._failure is None:
                    fn(*args, **kwargs)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                self._failure = err
            finally:
                self._queue.task_done()
        self._queue.task_done()


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


