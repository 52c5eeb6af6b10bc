"""The sweep parent: a Hydra callback grouping the jobs of a `--multirun` under one MLflow run.

The parent is created, or reopened for a re-run of the same sweep (each job then skips or
resumes), when the sweep starts and handed to the jobs through the environment (launchers that
fork or pickle get it too). When the sweep ends it prints the table of jobs from their records
(`vaelab.sweeps`), logs what the parent shows (name, params, best metrics, the children's CSV,
figures and report) and closes it FAILED if a job failed, else FINISHED; KILLED on a signal.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vaelab.presentation import run_link, ui_base
from vaelab.sweeps import (
    FAILED_STATUSES, JobRecord, best_child, job_table, shared_params, sweep_name, sweep_table, swept_keys,
    tolerate_failed_trials,
)
from vaelab.tracking.base import PARENT_ENV
from vaelab.tracking.store import connect, latest, route_library_logs, sweep_children, use_experiment
from vaelab.tracking.worker import short_error

log = logging.getLogger(__name__)
SWEEP_IDENTITY_TAG = "vaelab.sweep_identity"
BEST_METRICS = ("test/loss", "test/recon", "test/kl")
REPORT = "sweep_report.html"


class _Store(NamedTuple):
    """Where the parent lives, as plain values: the callback travels pickled to joblib's workers."""

    uri: str
    experiment: str
    artifact_location: str | None
    ui_url: str | None


class _Outcome:
    """What the console script asks after Hydra returns."""

    failed = False  # whether a job of the sweep failed
    swept = False  # whether this process ran a sweep
    active: list[SweepParentRun] = []


def sweep_failed() -> bool:
    return _Outcome.failed


def swept() -> bool:
    return _Outcome.swept


def abort_sweeps() -> None:
    """Close every sweep still open in this process as KILLED (after SIGINT/SIGTERM)."""
    for sweep in list(_Outcome.active):
        sweep.close("KILLED")


class SweepParentRun(Callback):
    """Hydra callback: one parent MLflow run per --multirun, its jobs nested under it; an exit hook
    closes a parent that nothing else closed as FAILED."""

    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.sweep_dir: Path | None = None
        self.store: _Store | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.utils import instantiate

        tolerate_failed_trials(config)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        _Outcome.failed, _Outcome.swept = False, True
        _Outcome.active.append(self)
        atexit.register(self.close, "FAILED")
        tracker = instantiate(config.tracking) if config.get("tracking") else None
        if tracker is not None and tracker.enabled:
            self.store = _Store(tracker.uri, tracker.experiment, tracker.artifact_location, tracker.ui_url)
            route_library_logs(self.sweep_dir / "tracking.log")
            self.parent_id = self._open_parent(config)
            os.environ[PARENT_ENV] = self.parent_id
            log.info("MLflow parent run of this sweep: %s", self.parent_id)

    def _open_parent(self, config: DictConfig) -> str:
        """The parent of an earlier run of this very sweep (same overrides, same code), else a new one."""
        from vaelab.identity import code_digest

        client = connect(self.store.uri)
        exp_id = use_experiment(client, self.store.experiment, self.store.artifact_location)
        overrides = sorted(config.hydra.overrides.task) + sorted(config.hydra.overrides.hydra)
        identity = hashlib.sha256(json.dumps([overrides, code_digest()]).encode()).hexdigest()[:16]
        found = latest(client, exp_id, SWEEP_IDENTITY_TAG, identity)
        if found is not None:
            client.update_run(found.info.run_id, status="RUNNING")
            client.set_tag(found.info.run_id, "hydra.sweep.dir", str(self.sweep_dir))
            return found.info.run_id
        tags = {"hydra.sweep.dir": str(self.sweep_dir), "sweep": "parent", SWEEP_IDENTITY_TAG: identity,
                "overrides": " ".join(config.hydra.overrides.task) or "(none)"}
        return client.create_run(exp_id, run_name=f"sweep-{self.sweep_dir.name}", tags=tags).info.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        records = JobRecord.read_all(self.sweep_dir) if self.sweep_dir else []
        _Outcome.failed = any(r.status in FAILED_STATUSES for r in records)
        print(job_table(records, self.parent_id), flush=True)
        parent_id = self.parent_id
        self.close("FAILED" if _Outcome.failed else "FINISHED")
        if parent_id is not None:
            exp_id = connect(self.store.uri).get_run(parent_id).info.experiment_id
            link = run_link(ui_base(self.store.uri, self.store.ui_url), exp_id, parent_id)
            print(f"the sweep in the UI (vaelab ui): {link}", flush=True)

    def close(self, status: str) -> None:
        """Log the summary and end the parent run with `status` (once; later calls do nothing)."""
        if self in _Outcome.active:
            _Outcome.active.remove(self)
        if self.parent_id is None:
            return
        parent_id, self.parent_id = self.parent_id, None
        os.environ.pop(PARENT_ENV, None)
        client = connect(self.store.uri)
        try:
            self._summarize(client, parent_id)
        except Exception as err:  # noqa: BLE001 - the summary must not keep the parent open
            print(f"vaelab: the sweep summary could not be logged: {short_error(err)}", file=sys.stderr)
        finally:
            client.set_terminated(parent_id, status=status)

    def _summarize(self, client: Any, parent_id: str) -> None:
        """Name, params (write-once: a re-run adds new ones), best metrics, the children's CSV,
        the figures and the report of the parent."""
        from mlflow.entities import Metric, Param

        parent = client.get_run(parent_id)
        keys = swept_keys(parent.data.tags.get("overrides", "").split())
        children = sweep_children(client, parent_id)
        title = sweep_name(keys, len(children))
        client.update_run(parent_id, name=title)
        items = [Param(k, str(v)[:6000]) for k, v in shared_params(children, keys).items()
                 if k not in parent.data.params]
        for start in range(0, len(items), 100):  # MLflow takes 100 params a batch
            client.log_batch(parent_id, params=items[start : start + 100])
        best = best_child(children)
        if best is not None:
            client.log_batch(parent_id, metrics=[Metric(f"best/{m}", best.data.metrics[m], int(time.time() * 1000), 0)
                                                 for m in BEST_METRICS if m in best.data.metrics])
            client.set_tag(parent_id, "vaelab.best_run_id", best.info.run_id)
            client.set_tag(parent_id, "vaelab.best_run_name", best.info.run_name)
        client.log_text(parent_id, sweep_table(children, keys), "sweep_summary.csv")
        self._figures(client, parent_id, children, title)
        if children:
            self._report(client, parent_id, children, title)

    def _report(self, client: Any, parent_id: str, children: list[Any], title: str) -> None:
        """Every job's results, curves and final pictures on one page, logged and in the sweep's folder."""
        from vaelab.report import report_html
        from vaelab.tracking.readback import run_views

        page = report_html(run_views(client, children, self.store.uri, self.store.ui_url), title,
                           f"{len(children)} runs of sweep parent {parent_id} in experiment "
                           f"{self.store.experiment} ({self.store.uri})")
        client.log_text(parent_id, page, REPORT)
        try:
            (self.sweep_dir / REPORT).write_text(page, encoding="utf-8")
        except OSError as err:
            log.warning("the sweep report could not be written into %s: %s", self.sweep_dir, err.strerror)

    @staticmethod
    def _figures(client: Any, parent_id: str, children: list[Any], title: str) -> None:
        """Rate-distortion (labelled points) and test loss per configuration, with two results or more."""
        done = [c for c in children if {"test/kl", "test/recon", "test/loss"} <= c.data.metrics.keys()]
        if len(done) < 2:
            return
        from vaelab.plots import objective_per_config, rate_distortion

        labels, metric = [c.info.run_name for c in done], lambda key: [c.data.metrics[key] for c in done]
        client.log_figure(parent_id, rate_distortion(metric("test/kl"), metric("test/recon"), labels, title),
                          "figures/rate_distortion.png")
        client.log_figure(parent_id, objective_per_config(metric("test/loss"), labels, title),
                          "figures/test_loss_per_config.png")
