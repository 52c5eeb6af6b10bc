"""`MlflowTracker`: one training run as one MLflow run, through `MlflowClient(tracking_uri=uri)` and
the run's explicit id (no active run, no process-wide URI). Everything that talks to the store or
draws runs on the run's `Worker`, in order; the training loop only queues."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from vaelab.data.digest import sha256_file
from vaelab.errors import ResourceError, TrackingError
from vaelab.identity import code_digest
from vaelab.presentation import (
    CONFIG_TAG, compared_params, config_tag, flatten, job_tags, model_name, run_link, run_name, run_note, ui_base,
    ui_hint,
)
from vaelab.sweeps import sweep_job_name
from vaelab.tracking import outbox, store
from vaelab.tracking.base import PARENT_ENV, NullTracker, PastRun, RunContext
from vaelab.tracking.worker import Worker, log, short_error, until_usable

CHECKPOINT = "checkpoints/last.pt"  # a run's latest checkpoint among its artifacts


class MlflowTracker(NullTracker):
    """One MLflow run per training job; `uri` is the store (`tracking.uri`)."""

    enabled = True

    def __init__(self, uri: str, experiment: str = "vaelab", artifact_location: str | None = None,
                 parent_run_id: str | None = None, log_model: bool = True, run_name: str | None = None,  # noqa: ARG002
                 ui_url: str | None = None, connect_timeout_s: float = 5.0, patience_s: float = 120.0,
                 credentials: str | None = None) -> None:
        self.uri, self.experiment, self.artifact_location = uri, experiment, artifact_location
        if credentials:
            store.use_credentials(credentials)
        self.parent_run_id = parent_run_id or os.environ.get(PARENT_ENV) or None
        self.save_model, self.ui_url = log_model, ui_url
        self.connect_timeout_s, self.patience_s = connect_timeout_s, patience_s
        self.client: Any = None  # made on the worker by `connect`
        self.run_id: str | None = None
        self.name: str | None = None
        self.experiment_id: str | None = None  # None until the experiment exists
        self._worker = Worker(patience_s)
        self._latest: dict[str, tuple[float, int, int]] = {}  # key -> (value, step, timestamp ms)
        self._past: PastRun | None = None
        self._outbox: Path | None = None
        self._command = "vaelab"
        store.retry_on_our_terms(connect_timeout_s)

    @property
    def offline(self) -> str | None:  # type: ignore[override]
        return self._worker.offline

    def scope(self) -> str:
        return hashlib.sha256(f"{self.uri}\0{self.experiment}".encode()).hexdigest()[:8]

    def connect(self, identity: str, log_dir: Path | None = None) -> Future:
        if log_dir is not None:
            store.route_library_logs(log_dir / "tracking.log")
        return self._worker.call(self._usable, self._lookup, identity)

    def lookup(self, identity: str) -> PastRun | None:
        return self._usable(self._lookup, identity)

    def _usable(self, fn: Callable[..., Any], *args: Any) -> Any:
        return until_usable(self.uri, self.connect_timeout_s, self.patience_s, fn, *args)

    def _lookup(self, identity: str) -> PastRun | None:
        self.client = self.client or store.connect(self.uri)
        found = self.client.get_experiment_by_name(self.experiment)  # not created before a run is
        self.experiment_id = found.experiment_id if found is not None else None
        return store.find_run(self.client, self.experiment_id, identity) if found is not None else None

    @contextlib.contextmanager
    def start(self, cfg: DictConfig, context: RunContext | None = None, identity: str = "",
              resume: PastRun | None = None, outbox: Path | None = None) -> Iterator[MlflowTracker]:
        from vaelab.signals import deferred

        context = context or RunContext()
        self._past, self._outbox = resume, outbox
        self._command = " ".join(["vaelab", *context.overrides])
        try:
            with deferred():  # a signal while the run is created ends it KILLED, not RUNNING forever
                self.run_id = self._worker.call(self._usable, self._open, cfg, context, identity).result()
            self._worker.submit(self._describe_job, cfg, context, keep=True)
            self._worker.submit(self._log_outbox)
            yield self
            self._finish()
        except KeyboardInterrupt:
            self._abandon("KILLED")
            raise
        except BaseException as err:
            self._abandon("FAILED", err)
            raise

    def _open(self, cfg: DictConfig, context: RunContext, identity: str) -> str:
        """A new run, or `resume`'s reopened: same id, its metrics go on at later steps."""
        from mlflow.entities import RunTag

        self.experiment_id = self.experiment_id or store.use_experiment(self.client, self.experiment,
                                                                        self.artifact_location)
        tags = job_tags(context) | {store.IDENTITY_TAG: identity, "vaelab.host": socket.gethostname(),
                                    "vaelab.pid": str(os.getpid()), "vaelab.code": code_digest()}
        if self._past is not None:
            self.client.update_run(self._past.run_id, status="RUNNING")
            self.client.log_batch(self._past.run_id, tags=[RunTag(k, v) for k, v in tags.items()]
                                  + [RunTag("vaelab.resumed", "true")])
            self.name = self._past.name
            return self._past.run_id
        self.name = run_name(cfg)
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
            if not cfg.tracking.get("run_name"):  # a sweep's job: named by what it varies
                sweep = self.client.get_run(self.parent_run_id).data.tags.get("overrides", "")
                self.name = sweep_job_name(sweep, context.overrides) or self.name
        return self.client.create_run(self.experiment_id, run_name=self.name, tags=tags).info.run_id

    def _describe_job(self, cfg: DictConfig, context: RunContext) -> None:
        """A new run's config as params (they are write-once) and a tag; Hydra's job folder."""
        if self._past is None:
            config = flatten(OmegaConf.to_container(cfg, resolve=True))
            self._log_batch({}, None, 0, compared_params(context.choices, context.overrides, config))
            self.client.set_tag(self.run_id, CONFIG_TAG, config_tag(config))
        if context.output_dir is not None and (context.output_dir / ".hydra").is_dir():
            self.client.log_artifacts(self.run_id, str(context.output_dir / ".hydra"), "hydra")

    def _finish(self) -> None:
        """End the run FINISHED once everything queued is stored; if the store went away mid-run,
        say how to log what is kept locally."""
        self._worker.drain()
        if self.offline is None:
            self._worker.call(self._end, "FINISHED", None).result()
        self._worker.close()
        if self.offline is not None:
            raise TrackingError(f"the tracking store failed mid-run ({self.offline}); training went on and "
                                "its checkpoint, metrics and pictures are kept locally: run the same command "
                                "again once the store is back to log them")

    def _abandon(self, status: str, err: BaseException | None = None) -> None:
        """End the run KILLED or FAILED within seconds: queued pictures are dropped, the metrics and
        the checkpoint get up to 10 s."""
        from vaelab.signals import ignore_further

        if status == "KILLED":
            ignore_further()
        self._worker.discard()
        self._worker.drain(timeout=10.0)
        self._worker.close(wait_for_calls=False)
        if self.run_id is not None and self.offline is None:
            try:
                self._end(status, err)
            except Exception as failed:  # noqa: BLE001 - the run's own error is the one to report
                log.warning("could not mark MLflow run %s %s: %s", self.run_id, status, short_error(failed))

    def _end(self, status: str, err: BaseException | None) -> None:
        error = f"{type(err).__name__}: {err}" if err is not None else None
        self.client.set_tag(self.run_id, "mlflow.note.content", run_note(self._command, self._latest, status, error))
        if error:
            self.client.set_tag(self.run_id, "error", error[:5000])
        if status == "FAILED" and not isinstance(err, (ResourceError, TrackingError)):
            self.client.set_tag(self.run_id, store.FAILURE_TAG, "error")  # a re-run would repeat it
        self.client.set_terminated(self.run_id, status=status)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._worker.submit(self._log_batch, {}, None, 0, dict(params), keep=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, once: bool = False) -> None:
        if once and self._past is not None:
            metrics = {k: v for k, v in metrics.items() if k not in self._past.metric_keys}
        stamp = int(time.time() * 1000)  # kept, so the model's copy of a metric is the same row
        self._latest |= {k: (float(v), step or 0, stamp) for k, v in metrics.items()}
        self._worker.submit(self._log_batch, {k: float(v) for k, v in metrics.items()}, step, stamp, {}, keep=True)

    def _log_batch(self, metrics: dict[str, float], step: int | None, stamp: int, params: dict[str, Any],
                   model_id: str | None = None) -> None:
        from mlflow.entities import Metric, Param

        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step or 0, model_id=model_id)
                                                    for k, v in metrics.items()],
                              params=[Param(k, "null" if v is None else str(v)[:6000]) for k, v in params.items()])

    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None:
        self._worker.submit(self._picture, key, image, step, fallback=lambda: self._keep(key, image, step))

    def log_plot(self, key: str, draw: Callable[..., Any], step: int | None = None, final: bool = False) -> None:
        """`draw(title=...)`, drawn on the worker (even once the store is given up on): at `step` a
        keyed image (the UI's slider); without one, or `final`, the figure `figures/<key>.png` too."""
        self._worker.submit(self._plot, key, draw, step, final, fallback=lambda: self._plot(key, draw, step, final))

    def _plot(self, key: str, draw: Callable[..., Any], step: int | None, final: bool) -> None:
        from vaelab.plots import figure_to_array

        try:
            image = figure_to_array(draw(title=self.name if step is None else f"{self.name} · epoch {step}"))
        except Exception as err:  # noqa: BLE001 - a picture that cannot be drawn costs that picture only
            log.warning("the %s picture could not be drawn: %s", key, short_error(err))
            return
        for at in ([step] if step is not None else []) + ([None] if step is None or final else []):
            self.log_image(key, image, at)  # queued behind this call, retried on its own

    def _picture(self, key: str, image: np.ndarray, step: int | None) -> None:
        """A keyed image at `step`, else the figure `figures/<key>.png`; never in images/, where the
        UI drops all keyed images if one file is not its own."""
        if step is None:
            self.client.log_image(self.run_id, image, artifact_file=f"{store.FIGURES}/{key}.png")
        else:
            self.client.log_image(self.run_id, image, key=key, step=step, synchronous=True)

    def _keep(self, key: str, image: np.ndarray, step: int | None) -> None:
        if self._outbox is not None:
            outbox.keep(self._outbox, key, image, step)

    def _log_outbox(self) -> None:
        """The pictures an earlier run of this config could not log (its store was down)."""
        for key, image, step in outbox.kept(self._outbox) if self._outbox is not None else []:
            self._picture(key, image, step)

    def log_dataset(self, name: str, split: Any, source: str, context: str = "training") -> None:
        """`split` (a `vaelab.data.Split`) as a dataset input, its digest taken on the worker."""
        self._worker.submit(lambda: store.log_dataset(self.client, self.run_id, name, split.digest(), source, context))

    def log_model(self, model: Any, example: np.ndarray, spec: dict[str, Any] | None = None) -> None:
        """A CPU copy of the model, unless a resumed run has it: MLflow's pickled model (for those
        who trust their store) and beside it the weights and the configs that rebuild it."""
        if self.save_model and not (self._past is not None and self._past.has_model):
            self._worker.submit(self._model, copy.deepcopy(model).cpu().eval(), example, spec or {}, keep=True)

    def _model(self, model: Any, example: np.ndarray, spec: dict[str, Any]) -> None:
        import mlflow.pytorch
        import torch
        from mlflow.entities import LoggedModelOutput
        from mlflow.models import infer_signature

        with torch.no_grad():
            signature = infer_signature(example, model(torch.from_numpy(example)).logits.numpy())
        logged = self.client.create_logged_model(self.experiment_id, name=model_name(self.name or "model"),
                                                 source_run_id=self.run_id)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "model"
            mlflow.pytorch.save_model(model, folder, signature=signature,
                                      pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "vaelab"],
                                      serialization_format="pickle")  # a plain nn.Module back from load_model
            (folder / store.SPEC).parent.mkdir(parents=True, exist_ok=True)
            (folder / store.SPEC).write_text(json.dumps(spec, indent=1))
            torch.save(model.state_dict(), folder / store.WEIGHTS)
            self.client.log_model_artifacts(logged.model_id, str(folder))
            store.tag_digests(self.client, self.run_id, [folder / store.WEIGHTS, folder / store.SPEC])
        self.client.finalize_logged_model(logged.model_id, "READY")
        for key, (value, step, stamp) in self._latest.items():  # the final rows, linked to the model
            if key.startswith("test/"):
                self._log_batch({key: value}, step, stamp, {}, model_id=logged.model_id)
        self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step=0)])
        self.client.set_tag(self.run_id, store.MODEL_TAG, logged.model_id)

    def log_checkpoint(self, path: Path, epoch: int) -> None:
        """Upload the checkpoint just written to `path`, for any machine reaching the store to resume
        the run; a newer one drops an upload still queued."""
        self._worker.submit(self._upload, path, epoch, keep=True, replaces="checkpoint")

    def _upload(self, path: Path, epoch: int) -> None:
        if path.is_file():
            before, digest = path.stat().st_ino, sha256_file(path)
            self.client.log_artifact(self.run_id, str(path), str(Path(CHECKPOINT).parent))
            if path.stat().st_ino == before:  # else a newer checkpoint replaced it, its upload queued
                store.tag_digests(self.client, self.run_id, [], {"vaelab.checkpoint_epoch": str(epoch),
                                                                 store.DIGEST_TAG + path.name: digest})

    def fetch_checkpoint(self, run_id: str, dest: Path) -> Path | None:
        """`run_id`'s checkpoint, downloaded into `dest` and checked against its digest; None if none."""
        return self._worker.call(lambda: store.fetch_artifact(self.client, run_id, CHECKPOINT, dest)).result()

    def describe(self) -> str:
        link = run_link(ui_base(self.uri, self.ui_url), self.experiment_id, self.run_id)
        return (f"MLflow run '{self.name}' ({self.run_id}) in experiment '{self.experiment}' ({self.uri}); "
                f"{ui_hint(self.uri)}: {link}")

