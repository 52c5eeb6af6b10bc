"""`python -m vaelab.services server|slurm`: run a service in the foreground until Ctrl-C or SIGTERM.

`server` is `make server`: PostgreSQL (data under vaelab's home, kept across restarts) and an
MLflow tracking server over it on 127.0.0.1; `slurm` a one-node SLURM cluster to try
`hydra/launcher=slurm` on one machine (needs root).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from vaelab.paths import home
from vaelab.services.mlflow_server import tracking_server
from vaelab.services.process import ServiceError
from vaelab.services.slurm import SlurmCluster


class Stop(Exception):
    """Ctrl-C or SIGTERM: leave the `with` blocks, which stop every daemon in order."""


def _stop(signum: int, frame: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stop(signal.Signals(signum).name)


def serve(args: argparse.Namespace) -> None:
    root = Path(args.home).resolve() if args.home else home()
    with tracking_server(root / "postgres", root / "server-artifacts", port=args.port, host=args.host,
                         login=root / "server-auth") as server:
        credentials = server.login.credentials
        print(f"MLflow tracking server on PostgreSQL ready at {server.uri} (UI and API; data in {root})")
        print(f"tracking.uri={server.uri}")
        if server.password:  # made on this start: shown this once
            print(f"login: user admin, password {server.password}")
        print(f"  the login is in {credentials} (yours only); vaelab reads it with tracking.credentials=,"
              " MLflow's clients from ~/.mlflow/credentials or MLFLOW_TRACKING_USERNAME/PASSWORD")
        print(f"  e.g. vaelab --multirun tracking.uri={server.uri} tracking.credentials={credentials}"
              " tracking.artifact_location=null model.latent_dim=2,10\n  (artifact_location=null: artifacts go"
              " through the server)\nCtrl-C stops the server and PostgreSQL.", flush=True)
        wait()


def slurm(args: argparse.Namespace) -> None:
    with SlurmCluster(Path(args.folder) if args.folder else None) as cluster:
        print(f"one-node SLURM cluster ready: partition '{cluster.partition}' on {cluster.node}")
        print(f"export SLURM_CONF={cluster.conf}")
        print(f"  e.g. vaelab --multirun hydra/launcher=slurm hydra.launcher.partition={cluster.partition}"
              " model.latent_dim=2,10\nCtrl-C stops the cluster (and cancels its jobs).", flush=True)
        wait()


def wait() -> None:
    while True:
        signal.pause()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaelab.services", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("server", help="PostgreSQL + MLflow tracking server (make server)")
    server.add_argument("--home", help="folder for postgres/ and server-artifacts/ (default: vaelab's home, runs/)")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=5001)
    server.set_defaults(run=serve)
    cluster = commands.add_parser("slurm", help="a one-node SLURM cluster (root only)")
    cluster.add_argument("--folder", help="config, state and logs (default: a temporary folder, removed)")
    cluster.set_defaults(run=slurm)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        args.run(args)
    except Stop as stop:
        print(f"{stop}: every service stopped", flush=True)
    except ServiceError as err:
        print(f"vaelab.services: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
