"""`vaelab plan`: what a sweep would do to each of its jobs, read from the store, training nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow


def test_plan_tells_each_job_skip_resume_refuse_or_train_and_trains_nothing(mnist_root, tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "VAELAB_HOME": str(home)}
    args = [a for a in tiny_overrides(mnist_root) if a not in ("tracking=none", "trainer.epochs=1")]
    args += ["trainer.epochs=2", "trainer.images_every=0", "tracking.log_model=false"]
    sweep = subprocess.run([sys.executable, "-m", "vaelab", "--multirun", *args, "optimizer.lr=1e-3,1e30",
                            "model.latent_dim=2,3"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert sweep.returncode == 1, sweep.stderr[-3000:]  # the two jobs at lr=1e30 diverge
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vaelab").experiment_id])
    stopped = next(r for r in runs if r.data.tags.get("hydra.job.num") == "1")  # lr=1e-3, latent_dim=3
    client.set_terminated(stopped.info.run_id, "KILLED")  # as if pre-empted after its last checkpoint

    out = subprocess.run([sys.executable, "-m", "vaelab", "plan", "--multirun", *args, "optimizer.lr=1e-3,1e30",
                          "model.latent_dim=2,3,4"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "plan of 6 jobs (nothing is trained): 1 to skip, 1 to resume, 2 to refuse, 2 to train"
    actions = [line.split()[1] for line in lines[2::2]]
    assert actions == ["skip", "resume", "train", "refuse", "refuse", "train"], out.stdout
    assert f"run {stopped.info.run_id} (KILLED) from epoch 2 of 2" in out.stdout
    assert "failed before in run" in lines[9] and "DivergenceError" in lines[9]
    assert len(client.search_runs([client.get_experiment_by_name("vaelab").experiment_id])) == len(runs)

    optuna = subprocess.run([sys.executable, "-m", "vaelab", "plan", "hydra/sweeper=optuna", "loss.beta=1,2"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert optuna.returncode == 2 and "plan knows grid sweeps" in optuna.stderr
    for bad, said in (("model=nope", "vaelab plan: error: In 'config': Could not find 'model/nope'"),
                      ("model.latent_dim=abc", "vaelab plan: error: Error merging override model.latent_dim=abc")):
        out = subprocess.run([sys.executable, "-m", "vaelab", "plan", bad], capture_output=True, text=True, env=env,
                             timeout=300)
        assert out.returncode == 2 and out.stderr.startswith(said) and "Traceback" not in out.stderr, out.stderr
