"""The sweep parent: a Hydra callback grouping the jobs of a `--multirun` under one MLflow run.

Every job leaves a record (`vaelab_job.json`) in its output folder, whatever launcher ran it
(in-process, joblib workers, SLURM nodes sharing the folder). When the sweep ends the callback
reads them all, prints a table of every job, and closes the parent FAILED if any job failed
(FINISHED otherwise); the command's exit code follows. A sweep stopped by a signal closes its
parent KILLED. Re-running the same sweep reuses its parent, and each job skips or resumes.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vaelab.tracking.base import PARENT_ENV, RunContext
from vaelab.tracking.store import connect, route_library_logs, use_experiment
from vaelab.tracking.summary import log_sweep_summary, sweep_link
from vaelab.tracking.worker import short_error

log = logging.getLogger(__name__)
SWEEP_IDENTITY_TAG = "vaelab.sweep_identity"
RECORD = "vaelab_job.json"
FAILED_STATUSES = ("FAILED", "KILLED")


@dataclass
class JobRecord:
    """How one job of a sweep ended, written into the job's own output folder."""

    path: Path | None
    job: int | None = None
    overrides: list[str] = field(default_factory=list)
    status: str = "RUNNING"
    test_loss: float | None = None
    run_id: str | None = None
    error: str | None = None

    @classmethod
    def start(cls, context: RunContext) -> JobRecord:
        path = context.output_dir / RECORD if context.output_dir is not None else None
        return cls(path, context.job_num, list(context.overrides))

    def save(self, status: str, *, test_loss: float | None = None, run_id: str | None = None,
             error: str | None = None) -> None:
        self.status, self.test_loss, self.run_id, self.error = status, test_loss, run_id, error
        if self.path is not None and self.path.parent.is_dir():
            body = {k: v for k, v in asdict(self).items() if k != "path"}
            try:
                self.path.write_text(json.dumps(body, indent=1))
            except OSError as err:  # a full disk: the run's own error is the one to report
                log.warning("the job record %s could not be written: %s", self.path, err.strerror)

    @classmethod
    def read_all(cls, sweep_dir: Path) -> list[JobRecord]:
        records = []
        for path in sweep_dir.rglob(RECORD):
            try:
                records.append(cls(path, **json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(records, key=lambda r: (r.job is None, r.job or 0))


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
        self.store: tuple[str, str, str | None, str | None] | None = None  # uri, experiment, artifacts, UI
        # (plain values: the callback travels pickled to joblib's workers with Hydra's context)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.utils import instantiate

        tolerate_failed_trials(config)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        _Outcome.failed, _Outcome.swept = False, True
        _Outcome.active.append(self)
        atexit.register(self.close, "FAILED")
        tracker = instantiate(config.tracking) if config.get("tracking") else None
        if tracker is not None and tracker.enabled:
            self.store = (tracker.uri, tracker.experiment, tracker.artifact_location, tracker.ui_url)
            route_library_logs(self.sweep_dir / "tracking.log")
            self.parent_id = self._open_parent(config)
            os.environ[PARENT_ENV] = self.parent_id
            log.info("MLflow parent run of this sweep: %s", self.parent_id)

    def _open_parent(self, config: DictConfig) -> str:
        """The parent of an earlier run of this very sweep (same overrides, same code), reopened;
        else a new one."""
        from vaelab.identity import code_digest

        uri, experiment, artifact_location, _ = self.store
        client = connect(uri)
        exp_id = use_experiment(client, experiment, artifact_location)
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
            link = sweep_link(connect(self.store[0]), parent_id, self.store[0], self.store[3])
            print(f"the sweep in the UI (vaelab ui): {link}", flush=True)

    def close(self, status: str) -> None:
        """Log the summary and end the parent run with `status` (once; later calls do nothing)."""
        if self in _Outcome.active:
            _Outcome.active.remove(self)
        if self.parent_id is None:
            return
        parent_id, self.parent_id = self.parent_id, None
        os.environ.pop(PARENT_ENV, None)
        client = connect(self.store[0])
        try:
            log_sweep_summary(client, parent_id)
        except Exception as err:  # noqa: BLE001 - the summary must not keep the parent open
            print(f"vaelab: the sweep summary could not be logged: {short_error(err)}", file=sys.stderr)
        finally:
            client.set_terminated(parent_id, status=status)


def tolerate_failed_trials(config: DictConfig) -> None:
    """Optuna ends a study at its first failed trial unless `max_failure_rate` allows failures;
    in a search, diverging trials are normal, so vaelab allows them all unless the user set it.
    (The sweeper is built from this very config right after `on_multirun_start`.)"""
    from omegaconf import open_dict, read_write

    sweeper = config.hydra.sweeper
    user_set = any("max_failure_rate" in o for o in config.hydra.overrides.hydra)
    if "max_failure_rate" in sweeper and not user_set:
        with read_write(sweeper), open_dict(sweeper):
            sweeper.max_failure_rate = 1.0


def job_table(records: list[JobRecord], parent_id: str | None) -> str:
    """The console's end-of-sweep table: every job, its status, final test loss and the overrides
    that differ between jobs (those all jobs share are listed once, above)."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    head = f"sweep of {len(records)} jobs: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    if parent_id:
        head += f" (MLflow parent run {parent_id})"
    shared = set.intersection(*(set(r.overrides) for r in records)) if len(records) > 1 else set()
    lines = [head] + ([f"  shared: {' '.join(o for o in records[0].overrides if o in shared)}"] if shared else [])
    lines.append(f"{'job':>4}  {'status':<9} {'test loss':>9}  overrides")
    for r in records:
        loss = f"{r.test_loss:.2f}" if r.test_loss is not None else "-"
        varied = " ".join(o for o in r.overrides if o not in shared) or "(none)"
        lines.append(f"{r.job if r.job is not None else '-':>4}  {r.status:<9} {loss:>9}  {varied}")
        if r.error and r.status in FAILED_STATUSES:
            lines.append(f"{'':>4}  {r.error.splitlines()[0][:160]}")
    return "\n".join(lines)
