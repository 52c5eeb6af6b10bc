"""Sweeps and runs that survive: failed jobs, signals, lost or busy stores, re-runs that resume.

Each test drives the real command line in a subprocess over the fixture data and reads the MLflow
store back, as a user would see it.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import write_fake_mnist

pytestmark = pytest.mark.slow
TIMED = ("time/",)  # wall-clock metrics differ between any two runs


@pytest.fixture(scope="module")
def slow_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough images that an epoch lasts long enough to be interrupted in the middle."""
    root = tmp_path_factory.mktemp("mnist_survival")
    write_fake_mnist(root, n_train=3000, n_test=200)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for the module (a new one costs seconds of migrations); tests that need a
    store of their own (lost, locked, unwritable) make it themselves."""
    return tmp_path_factory.mktemp("survival_store")


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^\w.-]", "_", request.node.name)


def base_args(root: Path, home: Path, *extra: str, experiment: str = "vaelab") -> list[str]:
    return [f"data.root={root}", "data.verify=false", "trainer.batch_size=32", "trainer.progress=false",
            "trainer.images_every=0", "tracking.log_model=false", f"tracking.experiment={experiment}",
            f"tracking.uri=sqlite:///{home / 'mlflow.db'}", f"tracking.artifact_location={home / 'artifacts'}",
            *extra]


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "VAELAB_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def vaelab(*args: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaelab", *args], cwd=home.parent, capture_output=True,
                          text=True, timeout=timeout, env=env_for(home))


def start(*args: str, home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vaelab", *args], cwd=home.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(home))


def stop_after(proc: subprocess.Popen, line_start: str, signum: int) -> tuple[str, str]:
    """Send `signum` as soon as a stdout line starts with `line_start`; return all output."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.lstrip().startswith(line_start):
            proc.send_signal(signum)
            break
    out, err = proc.communicate(timeout=60)
    return "".join(seen) + out, err


def runs_of(home: Path, experiment: str = "vaelab") -> list:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def histories(home: Path, run_id: str) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    keys = [k for k in client.get_run(run_id).data.metrics if not k.startswith(TIMED)]
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


RESUMED = ("trainer.epochs=4", "trainer.seed=7")  # the config interrupted and resumed below


@pytest.fixture(scope="module")
def uninterrupted(slow_mnist: Path, store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Per-epoch metrics of the resumed config trained without interruption, in its own experiment."""
    home = tmp_path_factory.mktemp("reference_home")
    out = vaelab(*base_args(slow_mnist, store, *RESUMED, experiment="uninterrupted"), home=home)
    assert out.returncode == 0, out.stderr[-2000:]
    [run] = runs_of(store, "uninterrupted")
    return histories(store, run.info.run_id)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_an_interrupted_run_resumes_into_the_same_run_bit_identically(tmp_path, slow_mnist, store, experiment, signum,
                                                                    uninterrupted):
    args = base_args(slow_mnist, store, *RESUMED, experiment=experiment)

    out, err = stop_after(start(*args, home=tmp_path / "home"), "epoch   2/4", signum)
    [stopped] = runs_of(store, experiment)
    if signum == signal.SIGTERM:  # a signal the run sees: KILLED, one line, 143, checkpoint kept
        assert stopped.info.status == "KILLED"
        assert err.strip().splitlines()[-1].startswith("vaelab: stopped by SIGTERM")
        assert "Traceback" not in err
    else:  # a lost machine: the run stays RUNNING with no live process
        assert stopped.info.status == "RUNNING"

    again = vaelab(*args, home=tmp_path / "home")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming run {stopped.info.run_id} after epoch" in again.stdout
    [resumed] = runs_of(store, experiment)
    assert resumed.info.run_id == stopped.info.run_id and resumed.info.status == "FINISHED"
    got = histories(store, resumed.info.run_id)
    assert got == uninterrupted  # bit-identical, every epoch logged exactly once
    assert [s for s, _ in got["test/loss"]] == [1, 2, 3, 4]

    done = vaelab(*args, home=tmp_path / "home")  # the third time there is nothing left to do
    assert done.returncode == 0 and "already finished: run " + resumed.info.run_id in done.stdout
    assert "epoch   1/4" not in done.stdout


def test_a_sweep_goes_on_past_a_failing_job_and_reports_it(tmp_path, slow_mnist, store, experiment):
    args = base_args(slow_mnist, store, "trainer.epochs=2", "data.limit=300", experiment=experiment)
    out = vaelab("--multirun", *args, "optimizer.lr=1e30,1e-3", home=tmp_path / "home")
    assert out.returncode == 1, out.stderr[-2000:]
    assert "sweep of 2 jobs: 1 failed, 1 finished" in out.stdout
    assert "optimizer.lr=1e+30" in out.stdout and "DivergenceError" in out.stdout
    runs = runs_of(store, experiment)
    parent = next(r for r in runs if r.data.tags.get("sweep") == "parent")
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId")),
                      key=lambda r: r.data.tags["hydra.job.num"])
    assert parent.info.status == "FAILED"
    assert [c.info.status for c in children] == ["FAILED", "FINISHED"]
    assert "non-finite" in children[0].data.tags["error"]

    again = vaelab("--multirun", *args, "optimizer.lr=1e30,1e-3", home=tmp_path / "home")
    assert again.returncode == 1  # the diverging config is not retried unless asked
    assert "failed before in run" in again.stderr and "already finished" in again.stdout
    runs = runs_of(store, experiment)
    assert len(runs) == 3, "a re-run sweep reuses its parent and its children"


def test_a_parallel_sweep_keeps_its_healthy_jobs(tmp_path, slow_mnist, store, experiment):
    args = base_args(slow_mnist, store, "trainer.epochs=2", "data.limit=300", experiment=experiment)
    out = vaelab("--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *args,
                 "optimizer.lr=1e30,1e-3,2e-3", home=tmp_path / "home")
    assert out.returncode == 1, out.stderr[-2000:]
    children = [r for r in runs_of(store, experiment) if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED", "FINISHED"]
    assert "sweep of 3 jobs: 1 failed, 2 finished" in out.stdout


def test_an_optuna_study_sees_failed_trials_and_goes_on(tmp_path, slow_mnist, store, experiment):
    args = base_args(slow_mnist, store, "trainer.epochs=1", "data.limit=200", experiment=experiment)
    out = vaelab("--multirun", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=0",
                 *args, "optimizer.lr=choice(1e30,1e-3)", home=tmp_path / "home")
    assert "sweep of 4 jobs" in out.stdout and "Best value" in out.stderr + out.stdout, out.stderr[-3000:]
    # two choices, four trials: a config proposed again is skipped and its loss handed back
    statuses = [r.info.status for r in runs_of(store, experiment) if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(statuses) == ["FAILED", "FINISHED"]
    assert out.returncode == 1


def test_sigterm_on_a_sweep_kills_parent_and_child(tmp_path, slow_mnist, store, experiment):
    args = base_args(slow_mnist, store, "trainer.epochs=4", experiment=experiment)
    out, err = stop_after(start("--multirun", *args, "trainer.seed=1,2", home=tmp_path / "home"),
                          "epoch   1/4", signal.SIGTERM)
    runs = runs_of(store, experiment)
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]  # the parent and job 0
    assert "vaelab: stopped by SIGTERM" in err and "Traceback" not in err


def test_an_unreachable_store_is_one_line_within_seconds_and_nothing_trains(tmp_path, slow_mnist):
    args = base_args(slow_mnist, tmp_path / "home", "trainer.epochs=1", "tracking.uri=http://127.0.0.1:9")
    started = time.monotonic()
    out = vaelab(*args, home=tmp_path / "home")
    elapsed = time.monotonic() - started
    assert out.returncode == 2
    assert out.stderr.strip().startswith("vaelab: error: the tracking store http://127.0.0.1:9 cannot be reached")
    assert len(out.stderr.strip().splitlines()) == 1 and "epoch" not in out.stdout
    assert elapsed < 60, f"took {elapsed:.0f}s"  # 10 s of trying, plus start-up on a loaded CI machine


def test_an_unwritable_store_is_one_line_and_nothing_trains(tmp_path, slow_mnist):
    (tmp_path / "a-file").write_text("not a folder")
    args = base_args(slow_mnist, tmp_path / "home", "trainer.epochs=1",
                     f"tracking.uri=sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    out = vaelab(*args, home=tmp_path / "home")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "cannot be reached or written" in out.stderr and "epoch" not in out.stdout


def test_a_store_lost_mid_run_costs_no_training_and_a_rerun_logs_it(tmp_path, slow_mnist):
    home = tmp_path / "home"
    args = base_args(slow_mnist, home, "trainer.epochs=3", "tracking.patience_s=1")
    db, hidden = home / "mlflow.db", home / "mlflow.db.away"
    proc = start(*args, home=home)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("epoch   1/3"):
            db.rename(hidden)  # the store goes away: what is there is not a database
            db.write_bytes(b"this is not an SQLite database" * 100)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    assert "final test loss" in "".join(seen) + out  # training went on to the end
    assert "the tracking store failed mid-run" in err and "run the same command again" in err
    hidden.replace(db)  # the store is back
    again = vaelab(*args, home=home)
    assert again.returncode == 0, again.stderr[-2000:]
    [run] = runs_of(home)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in histories(home, run.info.run_id)["test/loss"]] == [1, 2, 3]


def test_a_store_locked_by_another_writer_costs_waiting_not_the_run(tmp_path, slow_mnist):
    home = tmp_path / "home"
    args = base_args(slow_mnist, home, "trainer.epochs=3")
    proc = start(*args, home=home)
    holder = None
    for line in proc.stdout:
        if line.startswith("epoch   1/3"):
            holder = threading.Thread(target=hold_lock, args=(home / "mlflow.db", 25.0))
            holder.start()
            break
    out, err = proc.communicate(timeout=300)
    holder.join()
    assert proc.returncode == 0, err[-2000:]
    [run] = runs_of(home)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in histories(home, run.info.run_id)["test/loss"]] == [1, 2, 3]


def hold_lock(db: Path, seconds: float) -> None:
    """Another writer holding SQLite's exclusive lock."""
    con = sqlite3.connect(db, timeout=30, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    time.sleep(seconds)
    con.execute("COMMIT")
    con.close()


@pytest.mark.parametrize("value", ["loss.beta=inf", "optimizer.lr=inf", "loss.beta=nan"])
def test_non_finite_numbers_are_rejected_up_front(tmp_path, slow_mnist, value):
    out = vaelab(*base_args(slow_mnist, tmp_path / "home", value), home=tmp_path / "home")
    key = value.split("=")[0]
    assert out.returncode == 2
    assert out.stderr.strip().startswith(f"vaelab: error: {key} must be a finite number")
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "home" / "mlflow.db").exists()


def test_a_yaml_error_in_a_user_config_names_file_line_and_column(tmp_path, slow_mnist):
    (tmp_path / "mine" / "model").mkdir(parents=True)
    (tmp_path / "mine" / "model" / "broken.yaml").write_text("hidden_dim: [1, 2\nlatent_dim: 3\n")
    out = vaelab(*base_args(slow_mnist, tmp_path / "home"), f"hydra.searchpath=[file://{tmp_path / 'mine'}]",
                 "model=broken", home=tmp_path / "home")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) <= 5 and "Traceback" not in out.stderr
    assert f"YAML syntax error in {tmp_path / 'mine' / 'model' / 'broken.yaml'}, line 2, column" in lines[0]


def test_config_errors_after_the_data_loads_never_abort(tmp_path, slow_mnist):
    """An optimizer that cannot be built fails after the data loads; while a helper thread was
    still importing, that used to end in SIGABRT (exit 134) about one time in eight."""
    args = base_args(slow_mnist, tmp_path / "home", "data.limit=100", "++optimizer.betas=[2.0,0.9]")
    codes = [vaelab(*args, home=tmp_path / "home").returncode for _ in range(3)]
    assert codes == [2] * 3
