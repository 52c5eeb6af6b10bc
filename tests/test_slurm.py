"""`hydra/launcher=slurm` against a real one-node SLURM cluster (munged, slurmctld and slurmd
started by the test): a sweep landing under one MLflow parent, and pre-emption by requeue."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import write_fake_mnist
from tests.services_fixtures import need, run_vaelab, sweep_runs, tracked_overrides, vaelab_command
from vaelab.services import SlurmCluster, slurm

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    """One cluster for the module; afterwards its jobs are cancelled and its daemons stopped."""
    need(slurm.missing())
    # KillWait: a pre-empted job has 10 s from SIGTERM to save itself before SIGKILL.
    with SlurmCluster(kill_wait_s=10) as running:
        daemons = [running.munge.daemon, *running.daemons]
        yield running
    assert not any(d.running() for d in daemons), "a daemon outlived the cluster"


def on_slurm(cluster: SlurmCluster) -> list[str]:
    """hydra/launcher=slurm with what the test cluster has: its partition, one CPU, 1 GB."""
    return ["hydra/launcher=slurm", f"hydra.launcher.partition={cluster.partition}",
            "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def test_a_two_job_sweep_lands_under_one_parent_through_a_login(cluster, mnist_root, tmp_path, monkeypatch):
    """Through a server with MLflow's login, as a cluster's shared server has: each SLURM job
    passes it (tracking.credentials), so the sweep lands whole."""
    from vaelab.services import MlflowServer
    from vaelab.services.login import Login
    from vaelab.tracking.store import read_credentials

    experiment, folder = "slurm_sweep", tmp_path / "server"
    with MlflowServer(f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts", login=Login(folder / "auth")) as server:
        out = run_vaelab(
            "--multirun", *tracked_overrides(mnist_root, server.uri, experiment, "tracking.artifact_location=null",
                                             f"tracking.credentials={server.login.credentials}"),
            *on_slurm(cluster), "model.latent_dim=2,3", cwd=tmp_path, env=cluster.env,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        for key, value in zip(("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
                              read_credentials(server.login.credentials)):
            monkeypatch.setenv(key, value)
        parent, children = sweep_runs(server.uri, experiment)
    assert parent.info.status == "FINISHED"
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    assert [c.data.params["model.latent_dim"] for c in children] == ["2", "3"]
    logs = list(Path(children[0].data.tags["hydra.sweep.dir"]).glob(".submitit/*/*_log.out"))
    assert len(logs) == 2, "each job ran as a SLURM job, its log in the sweep's .submitit folder"


@pytest.fixture(scope="module")
def slow_mnist(tmp_path_factory) -> Path:
    """More images than the tiny fixture, so that a job is still training when it is requeued."""
    root = tmp_path_factory.mktemp("mnist_slow")
    write_fake_mnist(root, n_train=3000, n_test=500)
    return root


def test_a_requeued_job_resumes_into_the_same_run(cluster, slow_mnist, mlflow_uri, tmp_path):
    """Pre-emption: `scontrol requeue` on a running job (SIGTERM, then back to the queue); the job
    starts again, resumes from its checkpoint and finishes the SAME MLflow run, each epoch once."""
    experiment, epochs = "slurm_requeue", 8
    sweep = subprocess.Popen(
        vaelab_command(
            "--multirun", *tracked_overrides(slow_mnist, mlflow_uri, experiment,
                                             f"tracking.artifact_location={tmp_path / 'artifacts'}"),
            *on_slurm(cluster), f"trainer.epochs={epochs}", "trainer.batch_size=16", "model.latent_dim=2",
        ),
        cwd=tmp_path, env={**os.environ, **cluster.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        run_id = wait_for_epoch(mlflow_uri, experiment, epoch=1, sweep=sweep)
        job_id, state = only_job(cluster)
        assert state == "RUNNING", "the job finished before it could be requeued: make slow_mnist slower"
        cluster.requeue(job_id)
        output, _ = sweep.communicate(timeout=480)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, output[-3000:]
    assert cluster.job(job_id)["Restarts"] == "1", "SLURM ran the job a second time"

    parent, children = sweep_runs(mlflow_uri, experiment)
    assert [c.info.run_id for c in children] == [run_id], "the requeued job went on in the same run"
    assert children[0].info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert children[0].data.tags.get("vaelab.resumed") == "true"
    history = MlflowClient(mlflow_uri).get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1)), "each epoch logged once"


def wait_for_epoch(uri: str, experiment: str, epoch: int, sweep: subprocess.Popen, timeout: float = 300) -> str:
    """Poll the store until a job of `experiment` has logged `epoch`; return its run id."""
    client = MlflowClient(uri)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert sweep.poll() is None, f"the sweep ended early:\n{sweep.stdout.read()[-3000:]}"
        exp = client.get_experiment_by_name(experiment)
        jobs = client.search_runs([exp.experiment_id], "tags.`hydra.job.num` = '0'") if exp else []
        for run in jobs:
            if any(m.step >= epoch for m in client.get_metric_history(run.info.run_id, "train/loss")):
                return run.info.run_id
        time.sleep(0.2)
    raise AssertionError(f"no job of {experiment} reached epoch {epoch} in {timeout} s")


def only_job(cluster: SlurmCluster) -> tuple[str, str]:
    jobs = cluster.jobs()
    assert len(jobs) == 1, jobs
    return next(iter(jobs.items()))
