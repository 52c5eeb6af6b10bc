"""Sweeps and stores under a real cluster's faults (issue 15, rows 3, 6, 7, 9 and 10): two sweeps
started together, a store deleted mid-run, a server killed and restarted, SIGTERM to a joblib
sweep, and what piles up on disk while a store is down.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.survival_helpers import (  # noqa: F401 - fixtures are found by name
    base_args, experiment, histories, runs_of, slow_mnist, start, stop_after, store, vaelab,
)
from vaelab.services import MlflowServer

pytestmark = pytest.mark.slow
SMALL = ("model.hidden_dim=32", "trainer.eval_batch_size=200")


def test_two_sweeps_started_together_on_a_new_home_get_their_own_folders_and_parents(tmp_path, slow_mnist):
    """Row 3: they shared one sweep folder (one table listed the other's jobs, the runs' Hydra
    overrides were the other's) and on a new home one ran without a parent."""
    home = tmp_path / "home"
    args = base_args(slow_mnist, home, "trainer.epochs=1", "data.limit=200", *SMALL)
    sweeps = [start("--multirun", *args, f"trainer.seed={a},{b}", home=home) for a, b in ((1, 2), (3, 4))]
    outs = [p.communicate(timeout=300) for p in sweeps]
    assert [p.returncode for p in sweeps] == [0, 0], [e[-2000:] for _, e in outs]
    assert all("sweep of 2 jobs: 2 finished" in o for o, _ in outs), outs
    parents = [r for r in runs_of(home) if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 2 and len({p.data.tags["hydra.sweep.dir"] for p in parents}) == 2
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    for parent in parents:
        seeds = re.search(r"trainer.seed=(\S+)", parent.data.tags["overrides"]).group(1).split(",")
        children = [r for r in runs_of(home) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(c.data.params["trainer.seed"] for c in children) == sorted(seeds)
        for child in children:
            logged = Path(client.download_artifacts(child.info.run_id, "hydra/overrides.yaml", str(tmp_path)))
            assert f"trainer.seed={child.data.params['trainer.seed']}" in logged.read_text()


def test_a_store_deleted_mid_run_is_one_line_and_the_rerun_does_not_train_again(tmp_path, slow_mnist):
    """Row 6: 56 tracebacks over 2 minutes ending in a bare URL as the reason, and the re-run
    trained from scratch."""
    home = tmp_path / "home"
    args = base_args(slow_mnist, home, "trainer.epochs=3", "tracking.patience_s=1", *SMALL)
    proc = start(*args, home=home)
    for line in proc.stdout:
        if line.startswith("epoch   1/3"):
            (home / "mlflow.db").unlink()
            break
    out, err = proc.communicate(timeout=300)
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err[-3000:]
    assert "http" not in err.strip().splitlines()[-1]
    if proc.returncode == 0:  # SQLite kept writing the deleted file: the run finished there
        return
    assert proc.returncode == 2 and "run the same command again" in err
    again = vaelab(*args, home=home)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming an interrupted run after epoch 3" in again.stdout and "epoch   1/3" not in again.stdout
    [run] = runs_of(home)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in histories(home, run.info.run_id)["test/loss"]] == [1, 2, 3]


def test_pictures_logged_while_the_server_was_down_reach_it_on_the_rerun(tmp_path, slow_mnist):
    """Rows 7 and 10: the re-run logged the missing metrics but lost the pictures of the epochs
    trained while the server was down; upload snapshots piled up beside last.pt meanwhile."""
    home, backend = tmp_path / "home", tmp_path / "server"
    backend.mkdir()
    server = MlflowServer(f"sqlite:///{backend / 'mlflow.db'}", backend / "artifacts")
    args = [*base_args(slow_mnist, home, "trainer.epochs=5", "trainer.images_every=1", "tracking.patience_s=1",
                       *SMALL), f"tracking.uri={server.uri}", "tracking.artifact_location=null"]
    with server:
        proc = start(*args, home=home)
        for line in proc.stdout:
            if line.startswith("epoch   2/5"):
                server.stop()  # killed after epoch 2
                break
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "the tracking store failed mid-run" in err, err[-2000:]
    assert len(list((home / "checkpoints").rglob("*.pt"))) == 1, list((home / "checkpoints").rglob("*"))
    with server:  # restarted later, on the same port
        again = vaelab(*args, home=home)
        assert again.returncode == 0, again.stderr[-2000:]
        client = MlflowClient(server.uri)
        [run] = client.search_runs([client.get_experiment_by_name(args_experiment(args)).experiment_id])
        assert run.info.status == "FINISHED"
        images = [f.path for f in client.list_artifacts(run.info.run_id, "images")]
        for step in range(1, 6):
            png = rf"images/reconstructions\+step\+{step}\+timestamp\+\d+\+[0-9a-f-]+\.png$"
            assert any(re.match(png, p) for p in images), (step, images)
    assert not list((home / "checkpoints").rglob("*.npz")), "the outbox is emptied"


def args_experiment(args: list[str]) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith("tracking.experiment="))


def test_sigterm_to_a_joblib_sweep_ends_its_children_killed(tmp_path, slow_mnist):
    """Row 9: its children stayed RUNNING, with a leaked-semaphore warning."""
    home = tmp_path / "home"
    args = base_args(slow_mnist, home, "trainer.epochs=20", *SMALL)
    proc = start("--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *args, "trainer.seed=1,2",
                 home=home)
    started = 0
    for line in proc.stdout:
        started += line.startswith("epoch   1/20")
        if started == 2:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "leaked" not in err and "Traceback" not in err, err[-2000:]
    time.sleep(1)
    runs = runs_of(home)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(r.info.status for r in children) == ["KILLED", "KILLED"], [(r.info.run_name, r.info.status) for r in runs]
    assert [r.info.status for r in runs if r.data.tags.get("sweep") == "parent"] == ["KILLED"]
