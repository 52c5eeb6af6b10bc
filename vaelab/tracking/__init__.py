"""Experiment tracking: the one package that talks to MLflow.

`run` holds a training run's lifecycle, `remote` the process its MLflow calls run in (never
the training process) and `calls` what runs there, `sweep` the Hydra callback that groups a `--multirun`
under a parent run, `summary` what that parent shows, `store` reading runs back.
"""

from vaelab.tracking.calls import PastRun
from vaelab.tracking.run import PARENT_ENV, MlflowTracker, NullTracker, RunContext, flatten, run_name
from vaelab.tracking.store import load_run, log_to_run, use_experiment
from vaelab.tracking.links import DEFAULT_UI, run_link, ui_base
from vaelab.tracking.summary import log_sweep_summary, sweep_children, sweep_link, sweep_table
from vaelab.tracking.sweep import SweepParentRun

__all__ = [
    "PARENT_ENV", "MlflowTracker", "NullTracker", "PastRun", "RunContext", "SweepParentRun", "flatten", "load_run",
    "log_to_run", "run_name", "sweep_children", "sweep_table", "use_experiment",
    "DEFAULT_UI", "log_sweep_summary", "run_link", "sweep_link", "ui_base",
]
