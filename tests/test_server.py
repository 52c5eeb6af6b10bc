"""The shared tracking server for real: PostgreSQL and an MLflow server started by the test (and by
`make server`), a parallel sweep of the real CLI against it, everything read back over HTTP."""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.services_fixtures import need, run_vaelab, shared_tmpdir, sweep_runs, tracked_overrides
from vaelab.services import postgres, tracking_server
from vaelab.services.process import free_port, port_open
from vaelab.tracking.store import read_credentials

pytestmark = [pytest.mark.server, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server_home():
    """One folder per module, laid out as `make server` lays out runs/: the CLI test creates the
    database, the sweep's server starts again on it (MLflow's schema is created once)."""
    need(postgres.missing())
    with shared_tmpdir("vaelab-server-") as home:
        yield home


@pytest.fixture(scope="module")
def server(server_home):
    """PostgreSQL + MLflow server, ready; afterwards both are stopped, whatever happened."""
    with tracking_server(server_home / "postgres", server_home / "server-artifacts",
                         login=server_home / "server-auth") as running:
        yield running
    assert not port_open(running.host, running.port), "the MLflow server still listens"
    assert not (server_home / "postgres" / "data" / "postmaster.pid").exists(), "PostgreSQL still runs"


class Lines:
    """A child's output, read line by line in a thread, so that waiting for a line can time out."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._new: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line)
        self._new.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                if self._new.get(timeout=left) is None:
                    break
            except queue.Empty:
                break
            if found := [line for line in self.lines if line.startswith(prefix)]:
                return found[0]
        raise AssertionError(f"no line starting {prefix!r} in {timeout} s:\n" + "\n".join(self.lines[-30:]))


def test_the_login_checks_a_password_once_a_minute_not_on_every_request(tmp_path, monkeypatch):
    """MLflow checked every request's password with PBKDF2 (0.38 s a request here: a two-job SLURM
    sweep through the login spent 36 s in its summary); the login turns MLflow's own credential
    cache on, in a new login folder and in one made before."""
    from mlflow.server.auth.config import read_auth_config

    from vaelab.services.login import AUTH_CACHE_TTL_S, Login

    new, old = Login(tmp_path / "new"), Login(tmp_path / "old")
    new.prepare()
    old.prepare()
    made_before = "".join(line for line in old.config.read_text().splitlines(keepends=True)
                          if not line.startswith("auth_cache_ttl_seconds"))
    old.config.write_text(made_before)
    assert old.prepare() is None, "a login folder is made once"
    for login in (new, old):
        monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(login.config))
        config = read_auth_config()
        assert config.auth_cache_ttl_seconds == AUTH_CACHE_TTL_S > 0
        assert config.admin_password == read_credentials(login.credentials)[1]
        assert login.config.stat().st_mode & 0o777 == 0o600


def refused_without_login(uri: str) -> int:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
    except urllib.error.HTTPError as err:
        return err.code
    return 200


def test_make_server_prints_the_uri_keeps_its_data_and_stops_on_a_signal(server_home, monkeypatch):
    """The server had no login: any local user could write to it. It runs MLflow's basic-auth
    app, with an admin password made at the first start, printed that once, kept owner-only."""

    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, then what a process manager sends
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "vaelab.services", "server", "--home", str(server_home), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=server_home,
        )
        try:
            out = Lines(proc)
            uri = f"http://127.0.0.1:{port}"
            assert out.wait_for("tracking.uri=", timeout=240) == f"tracking.uri={uri}"
            out.wait_for("Ctrl-C stops", timeout=30)
            credentials = server_home / "server-auth" / "credentials"
            user, password = read_credentials(credentials)
            shown = [line for line in out.lines if line.startswith("login: ")]
            assert shown == ([f"login: user admin, password {password}"] if sig == signal.SIGINT else [])
            assert (credentials.stat().st_mode & 0o777, credentials.parent.stat().st_mode & 0o777) == (0o600, 0o700)
            assert refused_without_login(uri) == 401
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
            client = MlflowClient(uri)
            if sig == signal.SIGINT:
                client.create_experiment("kept across restarts")
            else:  # the second start found the first one's database
                assert client.get_experiment_by_name("kept across restarts") is not None
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == 0, "\n".join(out.lines[-30:])
        finally:
            if proc.poll() is None:
                proc.kill()
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
        time.sleep(0.2)  # the reader thread takes the last line
        assert out.lines[-1] == f"{sig.name}: every service stopped"
        assert not port_open("127.0.0.1", port)
        assert not (server_home / "postgres" / "data" / "postmaster.pid").exists()


def test_make_server_runs_that_command():
    if shutil.which("make") is None:
        pytest.skip("no make here")
    dry = subprocess.run(["make", "-n", "server", "SERVER_PORT=5099"], cwd=REPO, capture_output=True, text=True)
    assert "-m vaelab.services server --host 127.0.0.1 --port 5099" in dry.stdout, dry.stdout + dry.stderr


def test_a_parallel_sweep_lands_in_postgres_through_the_server(server, mnist_root, tmp_path, monkeypatch):
    """Through the login: the sweep's parent and both joblib workers pass it (tracking.credentials);
    without it, one line and exit 2, before anything trains."""
    experiment = "server_sweep"
    assert refused_without_login(server.uri) == 401
    nobody = run_vaelab(*tracked_overrides(mnist_root, server.uri, experiment), cwd=tmp_path)
    assert nobody.returncode == 2 and nobody.stderr.strip().splitlines() == [
        f"vaelab: error: the tracking server {server.uri} refused vaelab (it asks for a login): pass its login "
        "with tracking.credentials=<file> or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"], nobody.stderr
    out = run_vaelab(
        "--multirun", *tracked_overrides(mnist_root, server.uri, experiment),
        f"tracking.credentials={server.login.credentials}",
        "tracking.artifact_location=null",  # the server's default: artifacts go through it
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.latent_dim=2,3", cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]

    user, password = read_credentials(server.login.credentials)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)

    parent, children = sweep_runs(server.uri, experiment)
    assert parent.info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    assert [c.data.tags["hydra.job.num"] for c in children] == ["0", "1"]
    for child in children:
        assert child.data.metrics["test/loss"] > 0 and "train/loss" in child.data.metrics
        assert child.info.artifact_uri.startswith("mlflow-artifacts:"), child.info.artifact_uri

    client = MlflowClient(server.uri)
    config = client.download_artifacts(children[1].info.run_id, "hydra/config.yaml", str(tmp_path))
    assert "latent_dim: 3" in Path(config).read_text()
    table = client.download_artifacts(parent.info.run_id, "sweep_summary.csv", str(tmp_path))
    assert all(c.info.run_id in Path(table).read_text() for c in children)
    assert list(server.artifacts.rglob("sweep_summary.csv")), "artifacts land in the server's folder"
    assert _rows_in_postgres(server.backend_uri, experiment) == 3  # the parent and its two jobs


def _rows_in_postgres(url: str, experiment: str) -> int:
    """Runs of `experiment` counted in PostgreSQL itself, not through MLflow."""
    import psycopg2

    with psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://")) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs JOIN experiments USING (experiment_id) WHERE experiments.name = %s",
                    (experiment,))
        return cur.fetchone()[0]
