"""Experiment tracking: the one package that talks to MLflow.

`base` is the tracker interface the app calls (`NullTracker` does nothing), `mlflow_run` its
MLflow implementation (`MlflowTracker`), `worker` the background thread it logs on, `store` the
store itself (clients, experiments, looking runs up), `sweep` the Hydra callback that groups a
`--multirun` under a parent run (and what that parent shows), `presentation` how runs read in
the UI, `views` runs read back for `vaelab compare` and the sweep report, `outbox` the pictures
a store could not take, `credentials` a server's login. What a sweep's jobs record and are
named by, without MLflow, is `vaelab.sweeps`; the report itself, without MLflow, `vaelab.report`.
"""

from vaelab.tracking.base import PARENT_ENV, NullTracker, PastRun, RunContext, flatten, run_name
from vaelab.tracking.presentation import DEFAULT_UI, run_link, ui_base
from vaelab.tracking.mlflow_run import MlflowTracker
from vaelab.tracking.store import connect, load_run, log_to_run, sweep_children, use_experiment
from vaelab.tracking.sweep import SweepParentRun, log_sweep_summary, sweep_link

__all__ = [
    "PARENT_ENV", "MlflowTracker", "NullTracker", "PastRun", "RunContext", "SweepParentRun", "connect", "flatten",
    "load_run", "log_to_run", "run_name", "sweep_children", "use_experiment",
    "DEFAULT_UI", "log_sweep_summary", "run_link", "sweep_link", "ui_base",
]
