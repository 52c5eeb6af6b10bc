"""End-to-end runs of `run(cfg)` on the fixture data, read back from a real MLflow store."""

import json

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from vaelab import app, building, reporting
from vaelab.data import load_mnist, raw_dir
from vaelab.errors import ConfigError

pytestmark = pytest.mark.slow


def only_run(cfg):
    mlflow.set_tracking_uri(cfg.tracking.uri)
    exp = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    runs = MlflowClient().search_runs([exp.experiment_id]) if exp else []
    assert len(runs) == 1, f"expected one run, found {len(runs)}"
    return runs[0]


def test_a_tracked_run_logs_params_metrics_images_and_the_model(tracked_cfg, mnist_root):
    cfg = tracked_cfg("trainer.epochs=2")
    loss = app.run(cfg)
    run = only_run(cfg)
    client = MlflowClient()
    assert run.info.status == "FINISHED" and run.info.run_name == "mlp-h256-z2-b1.0"
    assert run.data.params["model.latent_dim"] == "2" and run.data.params["loss.beta"] == "1.0"
    assert not [k for k in run.data.params if "_target_" in k or "md5" in k]  # class paths and digests: in hydra/
    # few params: MLflow's image cards print them all above the picture; the whole config is a tag
    assert len(run.data.params) <= 12, sorted(run.data.params)
    assert json.loads(run.data.tags["vaelab.config"])["model.hidden_dim"] == 256
    for key in ("train/loss", "train/recon", "train/kl", "test/loss", "test/recon", "test/kl", "beta", "lr",
                "time/epoch_s", "time/wall_s"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    assert run.data.metrics["test/loss"] == pytest.approx(loss)
    assert run.data.metrics["test/loss"] == pytest.approx(run.data.metrics["test/recon"] + run.data.metrics["test/kl"], rel=1e-5)
    figures = {f.path for f in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/latent_space.png", "figures/manifold.png", "figures/kl_per_dimension.png"} <= figures
    keyed = [f.path for f in client.list_artifacts(run.info.run_id, "images")]
    for key in ("reconstructions", "samples", "latent_space", "manifold"):
        for step in (1, 2):
            assert any(p.startswith(f"images/{key}+step+{step}+") for p in keyed), (key, step, keyed)
    # the UI drops every keyed image of a run if one file in images/ is not key+step+...
    assert all(p.split("/")[1].split("+")[1:3] and "+step+" in p for p in keyed), keyed
    # each epoch's manifold is the decoded mosaic (15 x 15 images of 28 px, each pixel once); the figure with its
    # latent axes, which never move, is drawn once, at the end (a figure every epoch cost ~0.1 s of CPU)
    size = lambda path: logged_pixels(run.info.run_id, path).shape[:2]  # noqa: E731
    assert {size(p) for p in keyed if p.startswith("images/manifold+") and p.endswith(".png")} == {(420, 420)}
    assert size("figures/manifold.png") == (800, 800)
    assert {"test/kl_z0", "test/kl_z1"} <= run.data.metrics.keys()
    note = run.data.tags["mlflow.note.content"]
    assert "vaelab" in note and f"| test/loss | {loss:.2f} |" in note and "(epoch 2;" in note
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"mnist train (200)", "mnist test (60)"}
    assert inputs["mnist train (200)"].tags[0].value == "training"
    [output] = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert logged.name == "vae-mlp-h256-z2-b1_0"
    linked = {m.key: m.value for m in logged.metrics}
    assert linked["test/loss"] == pytest.approx(loss) and "test/kl_z1" in linked
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test/loss")] == [1, 2]  # not doubled
    model = mlflow.pytorch.load_model(f"models:/{output.model_id}")
    out = model(torch.rand(3, 784))
    assert out.logits.shape == (3, 784) and out.mu.shape == (3, 2)


def test_a_run_logs_the_probe_the_schedule_and_pictures_for_other_likelihoods(tracked_cfg):
    cfg = tracked_cfg("likelihood=continuous_bernoulli", "kl=capacity", "kl.fraction=1", "trainer.epochs=2",
                     "tracking.log_model=false")
    app.run(cfg)
    run = only_run(cfg)
    client = MlflowClient()
    assert 0 <= run.data.metrics["test/probe_acc"] <= 1
    capacity = [m.value for m in client.get_metric_history(run.info.run_id, "kl_capacity")]
    assert capacity == pytest.approx([12.5, 25.0])  # c_max over the whole run, logged per epoch
    assert any("samples" in f.path for f in client.list_artifacts(run.info.run_id, "images"))


def test_an_unlabelled_data_set_trains_without_probe(tracked_cfg, npz_path, tmp_path):
    from tests.conftest import write_fake_npz

    path = write_fake_npz(tmp_path / "plain.npz", labels=False)
    cfg = tracked_cfg("data=npz", f"data.path={path}", "tracking.log_model=false")
    app.run(cfg)
    run = only_run(cfg)
    assert "test/probe_acc" not in run.data.metrics and "test/loss" in run.data.metrics
    assert "figures/latent_space.png" in {f.path for f in MlflowClient().list_artifacts(run.info.run_id, "figures")}


def test_a_data_file_changed_in_place_trains_anew(tracked_cfg, tmp_path):
    """The identity covered the path, not the content: the re-run said 'already finished'."""
    from tests.conftest import write_fake_npz

    path = write_fake_npz(tmp_path / "mine.npz")
    cfg = tracked_cfg("data=npz", f"data.path={path}", "tracking.log_model=false", "trainer.images_every=0")
    assert app.execute(cfg).status == "FINISHED"
    assert app.execute(cfg).status == "SKIPPED"
    write_fake_npz(path, labels=False)
    assert app.execute(cfg).status == "FINISHED"
    mlflow.set_tracking_uri(cfg.tracking.uri)
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name(cfg.tracking.experiment).experiment_id])
    assert len({r.data.tags["vaelab.identity"] for r in runs}) == 2


def test_the_same_seed_gives_identical_metrics(tiny_cfg):
    first = app.run(tiny_cfg("trainer.epochs=2", "trainer.seed=3"))
    second = app.run(tiny_cfg("trainer.epochs=2", "trainer.seed=3"))
    third = app.run(tiny_cfg("trainer.epochs=2", "trainer.seed=4"))
    assert first == second != third


def test_an_error_inside_the_run_marks_it_failed_with_the_message(tracked_cfg, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(app, "fit", explode)
    cfg = tracked_cfg()
    with pytest.raises(RuntimeError, match="injected"):
        app.run(cfg)
    run = only_run(cfg)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "RuntimeError: injected failure"
    assert run.data.params["model.latent_dim"] == "2"  # what was logged before the error stays


def test_ctrl_c_marks_the_run_killed(tracked_cfg, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "fit", interrupt)
    cfg = tracked_cfg()
    with pytest.raises(KeyboardInterrupt):
        app.run(cfg)
    assert only_run(cfg).info.status == "KILLED"


def test_a_diverging_run_stops_with_a_clear_error(tracked_cfg):
    cfg = tracked_cfg("optimizer.lr=1e30", "trainer.epochs=3")
    with pytest.raises(Exception, match="non-finite metrics at epoch"):
        app.run(cfg)
    assert only_run(cfg).info.status == "FAILED"


def test_bad_config_leaves_no_run(tracked_cfg):
    cfg = tracked_cfg("model.latent_dim=0")
    with pytest.raises(ConfigError):
        app.run(cfg)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    assert mlflow.get_experiment_by_name(cfg.tracking.experiment) is None


def test_higher_dimensional_latents_are_projected_and_iw_nll_is_logged(tracked_cfg):
    cfg = tracked_cfg("model.latent_dim=5", "trainer.iw_samples=8", "tracking.log_model=false")
    app.run(cfg)
    run = only_run(cfg)
    assert run.data.params["iw.k"] == "8"
    assert run.data.metrics["test/iw_nll"] <= run.data.metrics["test/loss"] + 5  # a tighter bound, up to noise
    names = {f.path for f in MlflowClient().list_artifacts(run.info.run_id, "figures")}
    assert "figures/latent_space.png" in names and "figures/manifold.png" not in names


def test_probe_picks_one_image_per_digit_twice(mnist_root):
    data = load_mnist(raw_dir(mnist_root), torch.device("cpu"))
    probe = reporting.Probe.from_data(data, latent_dim=2, seed=0)
    labels = [int(data.test.y[(data.test.x == row).all(1)][0]) for row in probe.originals]
    assert labels == list(range(10)) * 2 and probe.z_samples.shape == (64, 2)


def test_iw_evaluation_of_a_finished_run_is_logged_back_to_it(tracked_cfg, mnist_root, mlflow_uri):
    from hydra import compose, initialize_config_dir

    from vaelab.paths import config_dir
    from vaelab.evaluate import evaluate_run

    cfg = tracked_cfg("data.binarize=dynamic", "data.test_limit=20", "trainer.images_every=0")
    elbo = app.run(cfg)
    run_id = only_run(cfg).info.run_id
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        ecfg = compose(config_name="evaluate", overrides=[
            f"run_id={run_id}", "k=64", f"data.root={mnist_root}", "data.verify=false", f"tracking.uri={mlflow_uri}"])
    nll = evaluate_run(ecfg)
    run = only_run(cfg)
    assert run.info.status == "FINISHED"
    assert run.data.params["iw.k"] == "64"
    assert run.data.metrics["test/iw_nll"] == pytest.approx(nll)
    assert run.data.metrics["test/iw_nll_k64"] == pytest.approx(nll)
    assert nll < elbo + 5  # the IW bound is at least as tight as the ELBO, up to sampling noise


def test_evaluating_an_unknown_run_is_a_clear_error(mlflow_uri):
    from vaelab.tracking import load_run

    with pytest.raises(ConfigError, match="run_id=nope: no such run"):
        load_run(mlflow_uri, "nope")


def test_bf16_autocast_trains_to_a_similar_loss(tiny_cfg):
    fp32 = app.run(tiny_cfg("trainer.epochs=2"))
    bf16 = app.run(tiny_cfg("trainer.epochs=2", "trainer.precision=bf16"))
    assert bf16 == pytest.approx(fp32, rel=0.05)


def test_an_unreachable_tracking_store_is_a_clear_error(tiny_cfg, tmp_path):
    from vaelab.errors import TrackingError

    (tmp_path / "blocker").write_text("a file where the store's folder should be")
    cfg = tiny_cfg("tracking=mlflow", f"tracking.uri=sqlite:///{tmp_path}/blocker/mlflow.db",
                   f"tracking.artifact_location={tmp_path}/a", "trainer.epochs=2")
    with pytest.raises(TrackingError, match="cannot be reached or written"):
        app.run(cfg)


def logged_pixels(run_id: str, path: str):
    """An image artifact of the run as an RGB array."""
    import numpy as np
    from PIL import Image

    with Image.open(MlflowClient().download_artifacts(run_id, path)) as image:
        return np.asarray(image.convert("RGB"))


def keyed_image(run_id: str, key: str, step: int) -> str:
    """The artifact path of a keyed image at `step` (images/<key>+step+<step>+...png; % in older MLflow)."""
    prefixes = (f"images/{key}%step%{step}%", f"images/{key}+step+{step}+")
    paths = [f.path for f in MlflowClient().list_artifacts(run_id, "images")
             if f.path.startswith(prefixes) and f.path.endswith(".png")]
    assert len(paths) == 1, paths
    return paths[0]


def test_the_last_epochs_pictures_are_the_runs_figures_drawn_once(tracked_cfg):
    """The last epoch's latent means are not drawn again in the wrap-up: the run's figure is the
    very pixels of that epoch's keyed image (titled with the epoch). The manifold's keyed images
    are its mosaics, and its figure (with the latent axes) is drawn once, from the last one."""
    cfg = tracked_cfg("trainer.epochs=2")
    app.run(cfg)
    run = only_run(cfg)
    figures = {f.path for f in MlflowClient().list_artifacts(run.info.run_id, "figures")}
    assert {"figures/latent_space.png", "figures/manifold.png", "figures/kl_per_dimension.png"} <= figures
    last = {}
    for key in ("latent_space", "manifold"):
        last[key] = logged_pixels(run.info.run_id, keyed_image(run.info.run_id, key, 2))
        first_epoch = logged_pixels(run.info.run_id, keyed_image(run.info.run_id, key, 1))
        assert first_epoch.shape == last[key].shape and (first_epoch != last[key]).any(), key
    assert (logged_pixels(run.info.run_id, "figures/latent_space.png") == last["latent_space"]).all()
    assert last["manifold"].shape == (420, 420, 3)
    assert logged_pixels(run.info.run_id, "figures/manifold.png").shape == (800, 800, 3)


def test_a_run_stopped_after_its_last_epoch_draws_its_figures_when_resumed(tracked_cfg, monkeypatch):
    """No epoch is left to report the final figures, so the wrap-up draws them."""
    finish = reporting.finish
    calls = []

    def stopped_once(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise KeyboardInterrupt  # after the last epoch's checkpoint, before the wrap-up
        return finish(*args, **kwargs)

    monkeypatch.setattr(app, "finish", stopped_once)
    cfg = tracked_cfg("trainer.epochs=2")
    with pytest.raises(KeyboardInterrupt):
        app.run(cfg)
    assert only_run(cfg).info.status == "KILLED" and calls[0]["figures"] is False
    app.run(cfg)  # resumes after epoch 2: nothing to train
    assert calls[1]["figures"] is True
    run = only_run(cfg)
    assert run.info.status == "FINISHED"
    figures = {f.path for f in MlflowClient().list_artifacts(run.info.run_id, "figures")}
    assert {"figures/latent_space.png", "figures/manifold.png", "figures/kl_per_dimension.png"} <= figures


def test_a_kept_picture_that_cannot_be_read_is_left_out_not_the_store(tracked_cfg):
    """A picture kept while a full disk also failed the store was a truncated .npz; the re-run
    read it, failed, and gave the store up: no metric, RUNNING, the same again on every re-run."""
    from hydra.utils import instantiate

    from vaelab.identity import config_identity
    from vaelab.paths import home

    cfg = tracked_cfg("trainer.epochs=1")
    identity = config_identity(cfg, building.build("data", cfg.data).digest())
    outbox = home() / "checkpoints" / f"{identity}-{instantiate(cfg.tracking).scope()}" / "outbox"
    outbox.mkdir(parents=True)
    (outbox / "1.npz").write_bytes(b"PK\x03\x04 cut short by a full disk")
    app.run(cfg)
    run = only_run(cfg)
    assert run.info.status == "FINISHED" and "test/loss" in run.data.metrics
    assert not outbox.exists() or not list(outbox.iterdir())
