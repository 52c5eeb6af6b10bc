"""`vaelab ui` (also `python -m vaelab.ui`, `make ui`): the MLflow UI over vaelab's store, on 127.0.0.1.

It is `vaelab.services.MlflowServer`, the server of `make server`, over vaelab's own store; the
browser tests serve their store through `serving()`, the same server, so the command a user runs
and the one the tests check are one piece of code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from vaelab.paths import home
from vaelab.services.mlflow_server import MlflowServer
from vaelab.services.process import ServiceError
from vaelab.presentation import DEFAULT_HOST, DEFAULT_PORT


def default_store() -> str:
    """The store every run lands in unless tracking.uri says otherwise (conf/tracking/mlflow.yaml)."""
    return f"sqlite:///{home() / 'mlflow.db'}"


def ui_server(store: str | None = None, host: str = DEFAULT_HOST, port: int | None = DEFAULT_PORT,
              artifacts: str | Path | None = None, log: Path | None = None) -> MlflowServer:
    """The MLflow server over `store` (default: vaelab's), artifacts under vaelab's home, read-only:
    another user of the machine who reaches it cannot change a run or plant a file in it."""
    return MlflowServer(store or default_store(), Path(artifacts or home() / "mlartifacts"),
                        port=port, host=host, log=log, app="vaelab-readonly")


@contextlib.contextmanager
def serving(store: str, port: int | None = None, log: Path | None = None,
            artifacts: str | None = None) -> Iterator[str]:
    """Serve `store` on 127.0.0.1 (a free port unless given) while the block runs; yields its address."""
    with ui_server(store, port=port, artifacts=artifacts, log=log) as server:
        yield server.uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vaelab ui", description=(
        "Serve vaelab's MLflow store in the MLflow UI on 127.0.0.1 (Ctrl-C stops it)."))
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST} (this machine only)")
    parser.add_argument("--store", default=None, help=f"a tracking URI; default {default_store()}")
    args = parser.parse_args(argv)
    server = ui_server(args.store, args.host, args.port)
    try:
        server.prepare()
    except ServiceError as err:
        print(f"vaelab ui: error: {err}", file=sys.stderr)
        return 2
    print(f"vaelab ui: {server.backend_uri} at {server.uri}", flush=True)
    command = server.command()
    os.execve(command[0], command, server.environment())  # the server becomes this process: Ctrl-C reaches it
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
