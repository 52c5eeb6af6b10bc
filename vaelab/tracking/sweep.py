"""The sweep parent: a Hydra callback grouping the jobs of a `--multirun` under one MLflow run."""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vaelab.tracking.run import PARENT_ENV
from vaelab.tracking.store import use_experiment
from vaelab.tracking.summary import log_sweep_summary

log = logging.getLogger(__name__)
MLFLOW_TARGETS = ("vaelab.tracking.MlflowTracker", "vaelab.tracking.run.MlflowTracker")  # noqa: E501


class SweepParentRun(Callback):
    """Hydra callback: one parent MLflow run per --multirun, its jobs nested under it.

    The parent is created in `on_multirun_start` and handed to the jobs through the environment
    (so it also reaches launchers that fork); `on_multirun_end` logs a CSV of every child's
    overrides and final metrics and closes it. If a job fails, Hydra skips `on_multirun_end`: an
    exit hook then closes the parent as FAILED, with the table of what did finish.
    """

    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.failed = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        tracking = config.get("tracking")
        if not tracking or tracking.get("_target_") not in MLFLOW_TARGETS:
            return
        from hydra.core.hydra_config import HydraConfig
        from mlflow import MlflowClient

        HydraConfig.instance().set_config(config)  # tracking.uri may interpolate ${hydra:...}
        exp_id = use_experiment(tracking.uri, tracking.experiment, tracking.artifact_location)
        sweep_dir = str(config.hydra.sweep.dir)
        run = MlflowClient().create_run(
            exp_id,
            run_name=f"sweep-{Path(sweep_dir).name}",
            tags={"hydra.sweep.dir": sweep_dir, "sweep": "parent",
                  "overrides": " ".join(config.hydra.overrides.task) or "(none)"},
        )
        self.parent_id = run.info.run_id
        os.environ[PARENT_ENV] = self.parent_id
        atexit.register(self._close, "FAILED")
        log.info("MLflow parent run of this sweep: %s", self.parent_id)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if getattr(job_return, "status", None) is not None and job_return.status.name == "FAILED":
            self.failed = True

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close("FAILED" if self.failed else "FINISHED")

    def _close(self, status: str) -> None:
        if self.parent_id is None:
            return
        parent_id, self.parent_id = self.parent_id, None
        os.environ.pop(PARENT_ENV, None)
        from mlflow import MlflowClient

        client = MlflowClient()
        try:
            log_sweep_summary(client, parent_id)
        finally:
            client.set_terminated(parent_id, status=status)


