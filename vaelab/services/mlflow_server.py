"""An MLflow tracking server (`mlflow server`) on 127.0.0.1 over any backend store, serving
artifacts from a local folder through itself, so that clients need only its http:// URI."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
import urllib.error
import urllib.request
from pathlib import Path

from vaelab.services.login import Login
from vaelab.services.postgres import PostgresServer
from vaelab.services.process import Daemon, Service, ServiceError, free_port, port_open
from vaelab.tracking.store import settle

START_TIMEOUT_S = 120.0  # the first start on an empty database runs MLflow's schema migrations


class MlflowServer(Service):
    """`with MlflowServer(backend_uri, artifacts) as server: server.uri` -> http://127.0.0.1:PORT.

    The backend URI reaches `mlflow server` through its environment (MLFLOW_BACKEND_STORE_URI),
    never the command line, where `ps` would show a database password. One worker: the server
    shares the machine with the training jobs it records.
    """

    def __init__(self, backend_uri: str, artifacts: Path, port: int | None = None, host: str = "127.0.0.1",
                 log: Path | None = None, workers: int = 1, app: str | None = None, login: Login | None = None) -> None:
        self.backend_uri, self.artifacts, self.login = backend_uri, Path(artifacts).resolve(), login
        self.app = "basic-auth" if login is not None else app
        self.host, self.port, self.workers = host, port or free_port(host), workers
        self.log = Path(log) if log else self.artifacts.parent / "mlflow-server.log"
        self.daemon: Daemon | None = None
        self.password: str | None = None  # the login's admin password, on the start that made it

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The `mlflow server` command line (no secrets: the store comes through `environment`);
        `app` names an `mlflow.app` plugin: vaelab's read-only one, or MLflow's basic-auth."""
        return [sys.executable, "-m", "mlflow", "server", "--host", self.host, "--port", str(self.port),
                "--workers", str(self.workers), "--serve-artifacts", "--artifacts-destination", str(self.artifacts),
                *(["--app-name", self.app] if self.app else [])]

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": self.backend_uri,
               # no job runner: its 7 consumer processes serve GenAI features vaelab does not use
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        return env | (self.login.environment() if self.login is not None else {})

    def prepare(self) -> None:
        """What the server needs before it starts, here or exec'd by `vaelab ui`: a free port (else
        a one-line ServiceError), the artifacts folder, and a SQLite store's tables, made under the
        lock vaelab's runs take (`store.settle`): the server would otherwise create a new store's
        tables while a run started beside it does, which MLflow's migrations do not survive."""
        if port_open(self.host, self.port):
            raise ServiceError(f"port {self.port} on {self.host} is taken: choose another (--port)")
        self.artifacts.mkdir(parents=True, exist_ok=True)
        if self.login is not None:
            self.password = self.login.prepare()
        settle(self.backend_uri)

    def start(self) -> None:
        self.prepare()
        self.daemon = Daemon(
            "MLflow server", self.command(), self.log, env=self.environment(), cwd=self.artifacts.parent,
            whole_group=True,  # `mlflow server` runs its web server (uvicorn) as a child process
        )
        try:
            self.daemon.wait_ready(self.healthy, START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop(timeout=5)  # state lives in the backend store: nothing to lose
            self.daemon = None

    def healthy(self) -> bool:
        """GET /health answers OK."""
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False


@contextlib.contextmanager
def tracking_server(postgres_dir: Path, artifacts: Path, port: int | None = None, host: str = "127.0.0.1",
                    login: Path | None = None) -> Iterator[MlflowServer]:
    """PostgreSQL (data in `postgres_dir`, kept across restarts) and an MLflow server over it
    (artifacts in `artifacts`, its log beside them), with MLflow's login if `login` names the
    folder of its files; the server stops first, whatever happens."""
    with PostgresServer(postgres_dir) as postgres, \
            MlflowServer(postgres.url, artifacts, port=port, host=host,
                         login=Login(login) if login is not None else None) as server:
        yield server
