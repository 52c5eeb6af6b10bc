"""Services that vaelab's tests and `make server` start and stop themselves, without systemd.

`PostgresServer` (a PostgreSQL cluster in a folder of ours), `MlflowServer` (an MLflow tracking
server over any backend store, artifacts served through it), `tracking_server` (the two together,
what `make server` runs), `SlurmCluster` (munged, slurmctld and slurmd as a one-node cluster).
Each is a context manager: it waits until the daemon is ready, raises `ServiceError` with the
daemon's log tail when it is not, and stops it on the way out whatever happened.
`python -m vaelab.services --help` runs them from the command line.
"""

from vaelab.services.mlflow_server import MlflowServer, tracking_server
from vaelab.services.postgres import PostgresServer
from vaelab.services.process import ServiceError, free_port
from vaelab.services.slurm import Munge, SlurmCluster

__all__ = ["MlflowServer", "Munge", "PostgresServer", "ServiceError", "SlurmCluster", "free_port", "tracking_server"]
