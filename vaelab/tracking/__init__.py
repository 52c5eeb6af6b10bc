"""Experiment tracking: the one package that talks to MLflow.

`run` holds a training run's lifecycle, `sweep` the Hydra callback that groups a `--multirun`
under a parent run, `summary` what that parent shows, `store` reading runs back.
"""

from vaelab.tracking.run import PARENT_ENV, MlflowTracker, NullTracker, PastRun, RunContext, flatten, run_name
from vaelab.tracking.store import load_run, log_to_run, use_experiment
from vaelab.tracking.summary import sweep_children, sweep_table
from vaelab.tracking.sweep import SweepParentRun

__all__ = [
    "PARENT_ENV", "MlflowTracker", "NullTracker", "PastRun", "RunContext", "SweepParentRun", "flatten", "load_run",
    "log_to_run", "run_name", "sweep_children", "sweep_table", "use_experiment",
]
