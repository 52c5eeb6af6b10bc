"""`vaelab ui` (also `python -m vaelab.ui`, `make ui`): the MLflow UI over vaelab's store, on 127.0.0.1.

The same helpers start, wait for and stop the server in the browser tests, so the command a user
runs and the one the tests check are one piece of code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from vaelab.paths import home
from vaelab.tracking.links import DEFAULT_HOST, DEFAULT_PORT


def default_store() -> str:
    """The store every run lands in unless tracking.uri says otherwise (conf/tracking/mlflow.yaml)."""
    return f"sqlite:///{home() / 'mlflow.db'}"


def server_command(store: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                   artifacts: str | None = None) -> list[str]:
    """`mlflow server` over `store`, one worker: a local UI, not a shared service."""
    mlflow = Path(sys.executable).with_name("mlflow")
    launcher = [str(mlflow)] if mlflow.is_file() else [sys.executable, "-m", "mlflow"]
    return [*launcher, "server", "--backend-store-uri", store,
            "--default-artifact-root", artifacts or str(home() / "mlartifacts"),
            "--host", host, "--port", str(port), "--workers", "1"]


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll `url`/health until the server answers; fail early if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the MLflow UI exited with code {process.returncode} before answering at {url}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.5)
    raise TimeoutError(f"the MLflow UI did not answer at {url} within {timeout:.0f}s")


def stop(process: subprocess.Popen) -> None:
    """Stop the server and the workers it started (its own process group)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


@contextlib.contextmanager
def serving(store: str, port: int | None = None, log: Path | None = None,
            artifacts: str | None = None) -> Iterator[str]:
    """Serve `store` on 127.0.0.1 while the block runs; yields the UI's address."""
    port = port or free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen(server_command(store, DEFAULT_HOST, port, artifacts),
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://{DEFAULT_HOST}:{port}"
        wait_ready(url, process)
        yield url
    finally:
        stop(process)
        if log:
            out.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vaelab ui", description=(
        "Serve vaelab's MLflow store in the MLflow UI on 127.0.0.1 (Ctrl-C stops it)."))
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST} (this machine only)")
    parser.add_argument("--store", default=None, help=f"a tracking URI; default {default_store()}")
    args = parser.parse_args(argv)
    store = args.store or default_store()
    print(f"vaelab ui: {store} at http://{args.host}:{args.port}", flush=True)
    command = server_command(store, args.host, args.port)
    os.execv(command[0], command)  # the server becomes this process: Ctrl-C and kill reach it directly


if __name__ == "__main__":
    sys.exit(main())
