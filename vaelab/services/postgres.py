"""A PostgreSQL server of our own: `initdb` once into a data folder, then `postgres` in the
foreground on 127.0.0.1 and a free port, as a non-root user (PostgreSQL refuses root: as root it
runs as the Debian `postgres` user), with one database and a password-protected role for MLflow."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from vaelab.services.process import (
    Daemon, ServiceError, as_user, chown_to, current_user, free_port, is_root, run_checked,
)

SERVICE_USER = "postgres"  # who runs PostgreSQL when we are root
SOCKET_PATH_MAX = 107      # a Unix socket path longer than this cannot be bound
START_TIMEOUT_S = 60.0


def bindir() -> Path | None:
    """Where initdb and postgres live: $PG_BINDIR, PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    if found := shutil.which("initdb"):
        return Path(found).resolve().parent  # e.g. a symlink into /usr/lib/postgresql/N/bin
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(debian[-1]).parent if debian else None


def missing() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None."""
    where = bindir()
    if where is None or not (where / "postgres").is_file():
        return "PostgreSQL is not installed (no initdb/postgres; Debian: apt-get install postgresql)"
    if is_root():
        try:
            import pwd
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return f"running as root, and there is no '{SERVICE_USER}' user to run PostgreSQL as"
    return None


class PostgresServer:
    """`with PostgresServer(folder) as pg: pg.url` -> postgresql+psycopg2://mlflow:...@127.0.0.1:PORT/mlflow.

    `folder` holds data/ (the cluster, created on first use, kept afterwards), postgres.log,
    socket/ and the role's password (mode 600). Stopping is a fast shutdown (SIGINT).
    """

    def __init__(self, folder: Path, port: int | None = None, database: str = "mlflow", role: str = "mlflow") -> None:
        self.folder = Path(folder).resolve()
        self.port = port or free_port()
        self.database, self.role = database, role
        self.user = SERVICE_USER if is_root() else None  # None: ourselves
        self.superuser = SERVICE_USER if is_root() else current_user()
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.socket_dir = self._socket_dir()
        self.daemon: Daemon | None = None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the database (MLflow's backend store URI). The driver is named:
        MLflow 3 otherwise asks SQLAlchemy for psycopg 3, and we ship psycopg2."""
        return f"postgresql+psycopg2://{self.role}:{self._password()}@127.0.0.1:{self.port}/{self.database}"

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if (reason := missing()) is not None:
            raise ServiceError(reason)
        self._prepare_folders()
        if not (self.data / "PG_VERSION").is_file():
            self._initdb()
        self.daemon = Daemon(
            "PostgreSQL",
            [str(bindir() / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.socket_dir}"],
            self.log, cwd=self.folder, user=self.user, stop_signal=signal.SIGINT,  # fast shutdown
        )
        try:
            self.daemon.wait_ready(self._accepting, START_TIMEOUT_S)
            self._ensure_database()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop(timeout=30)
            self.daemon = None
        if self.socket_dir.parent != self.folder:  # a short temporary socket folder
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the Unix socket (peer authentication); return its output."""
        return run_checked(
            [str(bindir() / "psql"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.superuser,
             "-d", database, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
            "psql", user=self.user, cwd=self.folder,
        )

    def _socket_dir(self) -> Path:
        inside = self.folder / "socket"
        if len(str(inside / f".s.PGSQL.{self.port}")) <= SOCKET_PATH_MAX:
            return inside
        return Path(tempfile.mkdtemp(prefix="vaelab-pg-"))  # a deep folder: the socket goes to /tmp

    def _prepare_folders(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for sub in (self.data, self.socket_dir):
            sub.mkdir(mode=0o700, exist_ok=True)
            chown_to(sub, self.user)
        if self.user is not None:
            probe = subprocess.run(["test", "-w", str(self.data)], **as_user(self.user), cwd="/")
            if probe.returncode != 0:
                raise ServiceError(
                    f"PostgreSQL runs as user '{self.user}' (it refuses root), who cannot reach {self.data}:"
                    " choose a folder whose parents that user may enter (e.g. under /tmp or /srv), or run as"
                    " a normal user")

    def _initdb(self) -> None:
        run_checked(
            [str(bindir() / "initdb"), "-D", str(self.data), "-U", self.superuser, "-E", "UTF8", "--locale=C",
             "--auth-local=peer", "--auth-host=scram-sha-256"],
            f"initdb of {self.data}", user=self.user, cwd=self.folder,
        )

    def _accepting(self) -> bool:
        ready = subprocess.run(
            [str(bindir() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            stdin=subprocess.DEVNULL, capture_output=True,
        )
        return ready.returncode == 0

    def _password(self) -> str:
        """The role's password, kept in the folder (mode 600) so that it survives restarts."""
        path = self.folder / f"{self.role}.password"
        if not path.is_file():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def _ensure_database(self) -> None:
        """The role (its password set from the file on every start) and its database."""
        role, password = self.role, self._password()
        exists = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'")
        verb = "ALTER" if exists.strip() else "CREATE"
        self.psql(f"{verb} ROLE {role} LOGIN PASSWORD '{password}'")
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'").strip():
            self.psql(f"CREATE DATABASE {self.database} OWNER {role}")
