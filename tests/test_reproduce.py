"""`vaelab reproduce RUN_ID`: a finished run trained again from what the store holds, side by side."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow


def test_a_run_reproduced_from_the_store_is_identical_and_a_tampered_config_is_refused(mnist_root, tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "VAELAB_HOME": str(home)}
    args = [a for a in tiny_overrides(mnist_root) if a not in ("tracking=none", "trainer.epochs=1")]
    first = subprocess.run([sys.executable, "-m", "vaelab", *args, "trainer.epochs=2", "loss.beta=2",
                            "tracking.log_model=false"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    [original] = client.search_runs([client.get_experiment_by_name("vaelab").experiment_id])
    client.set_tag(original.info.run_id, "vaelab.code", "0123456789abcdef")  # as if made by other code

    again = subprocess.run([sys.executable, "-m", "vaelab", "reproduce", original.info.run_id], cwd=tmp_path,
                           capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"vaelab reproduce: warning: vaelab's source differs from run {original.info.run_id}'s" in again.stdout
    assert again.stdout.rstrip().endswith("identical"), again.stdout[-2000:]
    assert "test/loss" in again.stdout and "+0.00e+00" in again.stdout
    runs = client.search_runs([original.info.experiment_id], f"tags.`vaelab.reproduces` = '{original.info.run_id}'")
    [copy] = runs
    assert copy.info.status == "FINISHED" and copy.info.run_id != original.info.run_id
    assert copy.data.metrics["test/loss"] == original.data.metrics["test/loss"]
    assert copy.data.params["loss.beta"] == "2.0" and copy.info.run_name.endswith("(reproduced)")
    assert "hydra/config.yaml" in {f.path for f in client.list_artifacts(copy.info.run_id, "hydra")}

    stored = Path(original.info.artifact_uri.removeprefix("file://")) / "hydra" / "config.yaml"
    stored.write_text(stored.read_text().replace("_target_: vaelab.likelihoods.Bernoulli", "_target_: os.system"))
    refused = subprocess.run([sys.executable, "-m", "vaelab", "reproduce", original.info.run_id], cwd=tmp_path,
                             capture_output=True, text=True, env=env, timeout=600)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        f"vaelab reproduce: error: run {original.info.run_id}'s logged config names os.system, which is not "
        "vaelab's or torch's: refused")
    assert len(client.search_runs([original.info.experiment_id])) == 2  # nothing more was trained
