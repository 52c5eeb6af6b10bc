"""The shared server's login: MLflow's own basic-auth app (`mlflow server --app-name basic-auth`).

At the first start an admin password is made and kept in a folder only its owner can open
(`server-auth/` beside the server's data), in two files: MLflow's auth config (which creates the
admin user on the first start) and `credentials`, in the format of MLflow's client credentials
file (`~/.mlflow/credentials`), which vaelab reads with `tracking.credentials=<that file>`
(`vaelab.tracking.store.use_credentials`).

MLflow checks the password of every request with PBKDF2 (0.37 s a request measured here, 0.012 s
without a login: benchmarks/bench_login.py); its own credential cache (`auth_cache_ttl_seconds`)
is turned on, so a worker checks each login once a minute. The price, as MLflow's `basic_auth.ini`
says: a password changed or a user deleted is still accepted for up to that minute by the
server's other workers.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from vaelab.services.process import ServiceError

ADMIN = "admin"
AUTH_CACHE_TTL_S = 60  # MLflow checks a password (PBKDF2, 0.37 s here) once a minute per worker, not on every request


class Login:
    """The login files in `folder`; `prepare` makes them once, `environment` hands them to the server."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).resolve()
        self.credentials = self.folder / "credentials"
        self.config = self.folder / "basic_auth.ini"
        self.database = self.folder / "basic_auth.db"
        self.secret_key = self.folder / "secret_key"

    def prepare(self) -> str | None:
        """Make the admin password at the first start: returns it then (to print once), else None."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        if self.credentials.is_file():
            self._cache_checks()
            return None
        if self.database.exists():
            raise ServiceError(f"the login database {self.database} exists but its password file {self.credentials} "
                               f"is gone: delete {self.database} to make a new admin password (its users go with it)")
        password = secrets.token_urlsafe(18)
        private(self.secret_key, secrets.token_hex(32))
        private(self.config, ini({"default_permission": "READ", "database_uri": f"sqlite:///{self.database}",
                                  "admin_username": ADMIN, "admin_password": password,
                                  "auth_cache_ttl_seconds": str(AUTH_CACHE_TTL_S)}))
        private(self.credentials, ini({"mlflow_tracking_username": ADMIN, "mlflow_tracking_password": password}))
        return password

    def _cache_checks(self) -> None:
        """A login folder made before vaelab turned MLflow's credential cache on gets it too."""
        text = self.config.read_text() if self.config.is_file() else ""
        if text and "auth_cache_ttl_seconds" not in text:
            private(self.config, text.rstrip("\n") + f"\nauth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n")

    def environment(self) -> dict[str, str]:
        return {"MLFLOW_AUTH_CONFIG_PATH": str(self.config),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key.read_text().strip()}


def ini(values: dict[str, str]) -> str:
    return "[mlflow]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())


def private(path: Path, text: str) -> None:
    """Write a file only its owner can read, created so from the start (no window of 0644)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
