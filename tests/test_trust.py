"""Nothing a store holds runs code: files planted in a run's artifacts (what anyone who could write
to the store could do) are never unpickled by evaluate or by a resume."""

from pathlib import Path

import mlflow
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from vaelab import app
from vaelab.errors import CheckpointError, ConfigError
from vaelab.config import untrusted
from vaelab.evaluate import evaluate_run
from vaelab.paths import config_dir

pytestmark = pytest.mark.slow


class Planted:
    """Unpickling this creates `path`: the stand-in for any code a pickle can run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def plant(target: Path, marker: Path) -> None:
    torch.save({"model": Planted(marker), "format": 1}, target)
    with pytest.raises(Exception):  # noqa: B017 - the planted file is armed: an unsafe load runs it
        torch.load(target, weights_only=True)
    torch.load(target, weights_only=False)
    assert marker.exists(), "the planted pickle should create the marker when unpickled"
    marker.unlink()


def finished_run(tracked_cfg, *extra):
    cfg = tracked_cfg("trainer.epochs=2", "trainer.images_every=0", *extra)
    app.run(cfg)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    [run] = MlflowClient().search_runs([mlflow.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    return cfg, run


def evaluate_cfg(cfg, run_id, mnist_root):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="evaluate", overrides=[
            f"run_id={run_id}", "k=4", f"data.root={mnist_root}", "data.verify=false", f"tracking.uri={cfg.tracking.uri}"])


def local_artifact(client, location: str, name: str) -> Path:
    path = Path(location.removeprefix("file://")) / name
    assert path.is_file(), path
    return path


def test_evaluate_reads_weights_only_and_refuses_a_changed_file(tracked_cfg, mnist_root, tmp_path):
    cfg, run = finished_run(tracked_cfg)
    client = MlflowClient()
    model = client.get_logged_model(run.outputs.model_outputs[-1].model_id)
    marker = tmp_path / "pwned"
    # MLflow's pickled model, replaced: vaelab never reads it, evaluate works and runs nothing
    plant(local_artifact(client, model.artifact_location, "data/model.pth"), marker)
    assert evaluate_run(evaluate_cfg(cfg, run.info.run_id, mnist_root)) > 0
    assert not marker.exists()
    # the weights themselves, replaced: the digest logged with them differs, one line, nothing run
    weights = local_artifact(client, model.artifact_location, "vaelab/weights.pt")
    plant(weights, marker)
    with pytest.raises(ConfigError, match=f"run {run.info.run_id}'s vaelab/weights.pt is not the file vaelab wrote"):
        evaluate_run(evaluate_cfg(cfg, run.info.run_id, mnist_root))
    # and without the digest (a tag deleted too): weights_only refuses the pickle
    client.delete_tag(run.info.run_id, "vaelab.sha256.weights.pt")
    with pytest.raises(ConfigError, match="is not plain weights"):
        evaluate_run(evaluate_cfg(cfg, run.info.run_id, mnist_root))
    assert not marker.exists()


def test_a_spec_naming_other_code_is_refused():
    spec = {"model": {"_target_": "vaelab.models.MLPVAE", "activation": "torch.nn.ReLU", "hidden": [1, 2]},
            "likelihood": {"_target_": "os.system", "name": "x.y", "beta": "1.5"}, "opt": "torch.optim.Adam"}
    assert list(untrusted(spec)) == ["os.system", "x.y"]


def test_a_resume_refuses_a_changed_store_checkpoint_and_runs_nothing(tracked_cfg, tmp_path, capsys):
    cfg, run = finished_run(tracked_cfg, "tracking.log_model=false")
    client = MlflowClient()
    client.set_terminated(run.info.run_id, "KILLED")  # as if stopped in its wrap-up
    checkpoint = Path(run.info.artifact_uri.removeprefix("file://")) / "checkpoints" / "last.pt"
    marker = tmp_path / "pwned"
    plant(checkpoint, marker)
    with pytest.raises(CheckpointError, match=f"no checkpoint of run {run.info.run_id} can be read"):
        app.run(cfg)
    assert not marker.exists()
    assert f"run {run.info.run_id}'s checkpoints/last.pt is not the file vaelab wrote" in capsys.readouterr().out
    client.delete_tag(run.info.run_id, "vaelab.sha256.last.pt")
    with pytest.raises(CheckpointError, match="can be read"):
        app.run(cfg)
    assert not marker.exists()
    assert client.get_run(run.info.run_id).info.status == "KILLED"
