"""The logging process: MLflow, its store and the figures live there, never in the training
process; it is shared by the runs of one process; if it dies, the run trains on, kept locally."""

import os
import signal
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.conftest import tiny_overrides
from vaelab import app
from vaelab.errors import TrackingError
from vaelab.tracking import remote


def test_a_tracked_run_never_imports_mlflow_or_matplotlib_in_the_training_process(mnist_root, tmp_path):
    overrides = tiny_overrides(mnist_root, "tracking=mlflow", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                               f"tracking.artifact_location={tmp_path / 'artifacts'}", "trainer.epochs=2",
                               f"hydra.run.dir={tmp_path / 'out'}")
    script = ("import atexit, sys; from vaelab.__main__ import main; sys.argv = ['vaelab', *sys.argv[1:]]; "
              "atexit.register(lambda: print('imported:', sorted({m.split('.')[0] for m in sys.modules} "
              "& {'mlflow', 'matplotlib'}))); main()")  # main() exits: the check runs at exit
    out = subprocess.run([sys.executable, "-c", script, *overrides], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "VAELAB_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr
    assert "imported: []" in out.stdout
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FINISHED" and run.data.metrics["test/loss"] > 0
    figures = {f.path for f in MlflowClient().list_artifacts(run.info.run_id, "figures")}
    assert {"figures/latent_space.png", "figures/manifold.png"} <= figures


def test_the_runs_of_one_process_share_its_logging_process(tracked_cfg):
    app.run(tracked_cfg("trainer.seed=1"))
    first = remote.shared_process()
    app.run(tracked_cfg("trainer.seed=2"))
    assert remote.shared_process() is first and first.exited is None


def test_a_logging_process_that_dies_mid_run_leaves_the_training_going_and_kept_locally(tracked_cfg, monkeypatch):
    report = app.report_epoch
    losses = []

    killed = []

    def kill_after_epoch_1(epoch, metrics, **kwargs):
        if epoch == 1:
            killed.append(remote.shared_process())
            os.kill(killed[0]._proc.pid, signal.SIGKILL)  # noqa: SLF001 - as the OOM killer would
        losses.append(metrics["test/loss"])
        report(epoch, metrics, **kwargs)

    monkeypatch.setattr(app, "report_epoch", kill_after_epoch_1)
    with pytest.raises(TrackingError, match="logging process exited.*kept locally"):
        app.run(tracked_cfg("trainer.epochs=3"))
    assert len(losses) == 3  # every epoch trained
    assert killed[0].exited and remote.shared_process() is not killed[0]  # the next run starts a new one
