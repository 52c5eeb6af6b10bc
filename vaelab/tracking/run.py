"""One tracked training run: `MlflowTracker` (lifecycle, params, metrics, images, model, logged
from a background thread) and `NullTracker`, the same interface doing nothing (`tracking=none`)."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vaelab.errors import TrackingError
from vaelab.tracking.links import run_link, ui_base
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
    return f"{m.name}-h{m.hidden_dim}-z{m.latent_dim}-b{float(cfg.loss.beta)}"


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
    def log_plot(self, key: str, make: Callable[[str], Any], step: int | None = None) -> None: ...
    def log_dataset(self, name: str, x: Any, source: str, context: str = "training") -> None: ...
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
        ui_url: str | None = None,
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.parent_run_id = parent_run_id or os.environ.get(PARENT_ENV) or None
        self.save_model = log_model
        self.ui_url = ui_url
        self.run_id: str | None = None
        self.name: str | None = None
        self._latest: dict[str, tuple[float, int, int]] = {}  # key -> (value, step, timestamp ms)
        self._command = "vaelab"
        self.experiment_id: str | None = None
        self._worker: _Worker | None = None

    @contextlib.contextmanager
    def start(self, cfg: DictConfig, context: RunContext | None = None) -> Iterator[MlflowTracker]:
        params = flatten(OmegaConf.to_container(cfg, resolve=True))
        context = context or RunContext()
        self._command = " ".join(["vaelab", *context.overrides])
        self._worker = _Worker()
        self._worker.submit(self._open, run_name(cfg), bool(cfg.tracking.get("run_name")), params, context)
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

    def _open(self, name: str, named: bool, params: dict[str, Any], context: RunContext) -> None:
        import mlflow

        self.experiment_id = use_experiment(self.uri, self.experiment, self.artifact_location)
        if self.parent_run_id and not named:  # a sweep's job: named by the values the sweep varies
            name = sweep_job_name(mlflow.get_run(self.parent_run_id).data.tags.get("overrides", ""),
                                  context.overrides) or name
        self.name = name
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
            worker.submit(_end_run, status, error, run_note(self._command, self._latest, status, error))
            worker.drain()
        worker.stop()
        if logging_failed:
            raise TrackingError(error) from failure

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._worker.submit(_fluent("log_params"), _param_values(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        stamp = int(time.time() * 1000)  # kept, so the model's copy of a metric is the same row
        self._latest |= {k: (float(v), step or 0, stamp) for k, v in metrics.items()}
        self._worker.submit(_fluent("log_metrics"), dict(metrics), step=step, timestamp=stamp)

    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None:
        if step is None:  # never into images/: the UI drops all keyed images if one file there is not its own
            self._worker.submit(_fluent("log_image"), image, artifact_file=f"{FIGURES}/{key}.png")
        else:  # the UI's Image grid shows keyed images with a step slider
            self._worker.submit(_fluent("log_image"), image, key=key, step=step)

    def log_figure(self, figure: Any, name: str) -> None:
        self._worker.submit(_fluent("log_figure"), figure, f"{FIGURES}/{name}.png")

    def log_plot(self, key: str, make: Callable[[str], Any], step: int | None = None) -> None:
        """Draw `make(run name)` on the worker thread; with a step, a keyed image for the slider."""
        self._worker.submit(self._draw, key, make, step)

    def _draw(self, key: str, make: Callable[[str], Any], step: int | None) -> None:
        import mlflow

        from vaelab.plots import figure_to_array

        figure = make(self.name or "")
        if step is None:
            mlflow.log_figure(figure, f"{FIGURES}/{key}.png")
        else:
            mlflow.log_image(figure_to_array(figure), key=key, step=step)

    def log_dataset(self, name: str, x: Any, source: str, context: str = "training") -> None:
        """An MLflow dataset input: the Dataset column shows `name` and a digest of the images."""
        self._worker.submit(_log_dataset, name, x, source, context)

    def log_model(self, model: Any, example: np.ndarray) -> None:
        """Log a CPU copy of the model under a name of its run, its final test metrics linked to it."""
        if self.save_model:
            self._worker.submit(self._log_model, copy.deepcopy(model).cpu().eval(), example)

    def _log_model(self, model: Any, example: np.ndarray) -> None:
        import mlflow

        info = _log_model(model, example, model_name(self.name or "model"))
        final = {k: v for k, v in self._latest.items() if k.startswith("test/")}
        for key, (value, step, stamp) in final.items():  # same rows as the run's: linked, not duplicated
            mlflow.log_metric(key, value, step=step, timestamp=stamp, model_id=info.model_id)

    def describe(self) -> str:
        link = run_link(ui_base(self.uri, self.ui_url), self.experiment_id, self.run_id)
        return f"MLflow run '{self.name}' ({self.run_id}) in experiment '{self.experiment}' ({self.uri}); {ui_hint(self.uri)}: {link}"


FIGURES = "figures"  # one-off figures; images/ belongs to MLflow's keyed images


def ui_hint(uri: str | None) -> str:
    """How to open the UI that serves `uri`."""
    if uri and uri.startswith(("http://", "https://")):
        return "open"
    return "open the UI with `vaelab ui` (or `make ui`) and go to"


def model_name(run_name: str) -> str:
    """A logged-model name from the run name (MLflow forbids / : . % and quotes in it)."""
    return "vae-" + re.sub(r"[/:.%\"' ]+", "_", run_name).strip("_")


def sweep_job_name(sweep_overrides: str, job_overrides: list[str]) -> str | None:
    """A sweep job's name: the values of the keys the sweep varies, e.g. `latent_dim=2 beta=4`."""
    from vaelab.tracking.summary import short_keys, swept_keys

    swept = swept_keys(sweep_overrides.split())
    values = dict(o.split("=", 1) for o in job_overrides if "=" in o)
    short = short_keys(swept)
    parts = [f"{short[k]}={values[k]}" for k in swept if k in values]
    return " ".join(parts) or None


def run_note(command: str, latest: Mapping[str, tuple[float, int, int]], status: str, error: str | None) -> str:
    """The run's description (markdown): how to run it again and its final results."""
    lines = ["**Command**", "", "```", command, "```", ""]
    if error:
        lines += [f"**{status}**: `{error[:500]}`", ""]
    shown = [k for k in NOTE_METRICS if k in latest]
    if shown:
        lines += ["**Final results** (nats/image)", "", "| metric | value | epoch |", "|---|---|---|"]
        lines += [f"| {k} | {latest[k][0]:.2f} | {latest[k][1]} |" for k in shown]
    return "\n".join(lines)


NOTE_METRICS = ("test/loss", "test/recon", "test/kl", "test/iw_nll", "test/active_units", "train/loss")


def _param_values(params: Mapping[str, Any]) -> dict[str, Any]:
    """MLflow drops None values: show them as the YAML spelling instead."""
    return {k: ("null" if v is None else v) for k, v in params.items()}


def _fluent(name: str) -> Any:
    """mlflow.<name>, resolved in the worker thread (whose active run is this tracker's)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        import mlflow

        return getattr(mlflow, name)(*args, **kwargs)
    return call


def _end_run(status: str, error: str | None, note: str | None = None) -> None:
    import mlflow

    if note:
        mlflow.set_tag("mlflow.note.content", note)
    if error:
        mlflow.set_tag("error", error[:5000])
    mlflow.end_run(status=status)


def _log_dataset(name: str, x: Any, source: str, context: str) -> None:
    import hashlib

    import mlflow
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    digest = hashlib.md5(x.detach().cpu().numpy().tobytes()).hexdigest()[:8]  # the images as used
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local folder either way
        warnings.simplefilter("ignore")
        where = resolve_dataset_source(source)
    mlflow.log_input(MetaDataset(where, name=name, digest=digest), context=context)


def _log_model(model: Any, example: np.ndarray, name: str = "model") -> Any:
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    logging.getLogger("mlflow.pytorch").addFilter(_KnownWarnings())
    logging.getLogger("mlflow.models.model").addFilter(_KnownWarnings())
    with torch.no_grad():
        logits = model(torch.from_numpy(example)).logits.numpy()
    return mlflow.pytorch.log_model(
        model,
        name=name,
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


