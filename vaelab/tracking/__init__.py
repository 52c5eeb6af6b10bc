"""Experiment tracking: the one package that talks to MLflow (DEVELOPERS.md, "The tracker")."""

from vaelab.tracking.base import NullTracker, PastRun, RunContext
from vaelab.tracking.mlflow_run import MlflowTracker
from vaelab.tracking.readback import load_run, log_to_run
from vaelab.tracking.sweep import SweepParentRun

__all__ = ["MlflowTracker", "NullTracker", "PastRun", "RunContext", "SweepParentRun", "load_run", "log_to_run"]
