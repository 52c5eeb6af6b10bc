"""The sweep parent: a Hydra callback grouping the jobs of a `--multirun` under one MLflow run,
and what that parent shows (`log_sweep_summary`: name, params, best metrics, the children's CSV
and figures).

When the sweep ends the callback reads every job's record (`vaelab.sweeps`), prints the table of
jobs, and closes the parent FAILED if any job failed (FINISHED otherwise); the command's exit
code follows. A sweep stopped by a signal closes its parent KILLED. Re-running the same sweep
reuses its parent, and each job skips or resumes.
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

from vaelab.sweeps import (
    FAILED_STATUSES, JobRecord, best_child, job_table, shared_params, sweep_name, sweep_table, swept_keys,
    tolerate_failed_trials,
)
from vaelab.tracking.base import PARENT_ENV
from vaelab.tracking.store import connect, route_library_logs, sweep_children, use_experiment
from vaelab.tracking.presentation import run_link, ui_base
from vaelab.tracking.worker import short_error

log = logging.getLogger(__name__)
SWEEP_IDENTITY_TAG = "vaelab.sweep_identity"
BEST_METRICS = ("test/loss", "test/recon", "test/kl")
BEST_TAG = "vaelab.best_run_id"
REPORT = "sweep_report.html"


class _Store(NamedTuple):
    """Where the sweep's parent lives: plain values, since the callback travels pickled to
    joblib's workers with Hydra's context (a tracker, with its thread, cannot)."""

    uri: str
    experiment: str
    artifact_location: str | None
    ui_url: str | None


class _Outcome:
    """What the console script needs after Hydra returns: whether any job of a sweep failed."""

    failed = False
    swept = False
    active: list[SweepParentRun] = []


def sweep_failed() -> bool:
    return _Outcome.failed


def swept() -> bool:
    """Whether this process ran a sweep."""
    return _Outcome.swept


def abort_sweeps() -> None:
    """Close every sweep still open in this process as KILLED (after SIGINT/SIGTERM)."""
    for sweep in list(_Outcome.active):
        sweep.close("KILLED")


class SweepParentRun(Callback):
    """Hydra callback: one parent MLflow run per --multirun, its jobs nested under it.

    The parent is created (or, for a re-run of the same sweep, reopened) in `on_multirun_start`
    and handed to the jobs through the environment (so it also reaches launchers that fork or
    pickle); `on_multirun_end` prints the job table, logs the summary and closes it. An exit hook
    closes a parent that nothing else closed as FAILED.
    """

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
        """The parent of an earlier run of this very sweep (same overrides, same code), reopened;
        else a new one."""
        from vaelab.identity import code_digest

        client = connect(self.store.uri)
        exp_id = use_experiment(client, self.store.experiment, self.store.artifact_location)
        overrides = sorted(config.hydra.overrides.task) + sorted(config.hydra.overrides.hydra)
        identity = hashlib.sha256(json.dumps([overrides, code_digest()]).encode()).hexdigest()[:16]
        found = client.search_runs([exp_id], f"tags.`{SWEEP_IDENTITY_TAG}` = '{identity}'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")
            client.set_tag(found[0].info.run_id, "hydra.sweep.dir", str(self.sweep_dir))
            return found[0].info.run_id
        run = client.create_run(
            exp_id,
            run_name=f"sweep-{self.sweep_dir.name}",
            tags={"hydra.sweep.dir": str(self.sweep_dir), "sweep": "parent", SWEEP_IDENTITY_TAG: identity,
                  "overrides": " ".join(config.hydra.overrides.task) or "(none)"},
        )
        return run.info.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        records = JobRecord.read_all(self.sweep_dir) if self.sweep_dir else []
        failed = any(r.status in FAILED_STATUSES for r in records)
        _Outcome.failed = failed
        print(job_table(records, self.parent_id), flush=True)
        parent_id = self.parent_id
        self.close("FAILED" if failed else "FINISHED")
        if parent_id is not None:
            link = sweep_link(connect(self.store.uri), parent_id, self.store.uri, self.store.ui_url)
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
            log_sweep_summary(client, parent_id, self.store, self.sweep_dir)
        except Exception as err:  # noqa: BLE001 - the summary must not keep the parent open
            print(f"vaelab: the sweep summary could not be logged: {short_error(err)}", file=sys.stderr)
        finally:
            client.set_terminated(parent_id, status=status)


def log_sweep_summary(client: Any, parent_id: str, where: _Store | None = None, folder: Path | None = None) -> None:
    """Name, params, best metrics, the children's CSV, the figures and the report (`sweep_report.html`,
    also written into the sweep's folder) of a sweep's parent run."""
    from mlflow.entities import Metric, Param

    parent = client.get_run(parent_id)
    keys = swept_keys(parent.data.tags.get("overrides", "").split())
    children = sweep_children(client, parent_id)
    client.update_run(parent_id, name=sweep_name(keys, len(children)))
    new = {k: v for k, v in shared_params(children, keys).items() if k not in parent.data.params}
    items = [Param(k, str(v)[:6000]) for k, v in new.items()]
    for start in range(0, len(items), 100):  # params are write-once: a re-run adds only new ones
        client.log_batch(parent_id, params=items[start : start + 100])
    best = best_child(children)
    if best is not None:
        now = int(time.time() * 1000)
        client.log_batch(parent_id, metrics=[Metric(f"best/{m}", best.data.metrics[m], now, 0)
                                             for m in BEST_METRICS if m in best.data.metrics])
        client.set_tag(parent_id, BEST_TAG, best.info.run_id)
        client.set_tag(parent_id, "vaelab.best_run_name", best.info.run_name)
    client.log_text(parent_id, sweep_table(children, keys), "sweep_summary.csv")
    log_sweep_figures(client, parent_id, children, sweep_name(keys, len(children)))
    if where is not None and children:
        log_sweep_report(client, parent_id, children, sweep_name(keys, len(children)), where, folder)


def log_sweep_report(client: Any, parent_id: str, children: list[Any], title: str, where: _Store,
                     folder: Path | None) -> None:
    """Every job's results, curves and final pictures on one page, rebuilt at each end of the sweep."""
    from vaelab.report import report_html
    from vaelab.tracking.views import run_views

    page = report_html(run_views(client, children, where.uri, where.ui_url), title,
                       f"{len(children)} runs of sweep parent {parent_id} in experiment {where.experiment} ({where.uri})")
    client.log_text(parent_id, page, REPORT)
    if folder is not None:
        try:
            (folder / REPORT).write_text(page, encoding="utf-8")
        except OSError as err:
            log.warning("the sweep report could not be written into %s: %s", folder, err.strerror)


def log_sweep_figures(client: Any, parent_id: str, children: list[Any], title: str) -> None:
    """Rate-distortion (labelled points) and test loss per configuration, with two or more results."""
    done = [c for c in children if {"test/kl", "test/recon", "test/loss"} <= c.data.metrics.keys()]
    if len(done) < 2:
        return
    from vaelab.plots import objective_per_config, rate_distortion

    labels = [c.info.run_name for c in done]
    client.log_figure(parent_id, rate_distortion([c.data.metrics["test/kl"] for c in done],
                                                 [c.data.metrics["test/recon"] for c in done], labels, title),
                      "figures/rate_distortion.png")
    client.log_figure(parent_id, objective_per_config([c.data.metrics["test/loss"] for c in done], labels, title),
                      "figures/test_loss_per_config.png")


def sweep_link(client: Any, parent_id: str, uri: str, ui_url: str | None = None) -> str:
    """The parent run's address in the UI that serves the store `uri` (`tracking.ui_url` if given)."""
    experiment_id = client.get_run(parent_id).info.experiment_id
    return run_link(ui_base(uri, ui_url), experiment_id, parent_id)
