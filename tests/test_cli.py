"""The real command line in a subprocess: help, errors, a multirun sweep, a wheel install."""

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def vaelab(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vaelab", *args], cwd=cwd, capture_output=True, text=True,
        timeout=600, env={**os.environ, "VAELAB_HOME": str(cwd / "runs"), **(env or {})},
    )


def test_help_lists_the_groups_and_their_options(tmp_path):
    out = vaelab("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "vaelab: train a Variational Autoencoder" in out.stdout
    for line in ("model: mlp, conv, mlp_deep_tanh, mlp_large",  # the default first
                 "experiment: iwae_burda, keras_conv, keras_seed, pytorch_example",
                 "optimizer: adam, adamw, rmsprop, sgd", "loss: elbo, beta_vae, elbo_warmup, iwae",
                 "likelihood: bernoulli, continuous_bernoulli, gaussian, gaussian_learned",
                 "kl: constant, capacity, cyclical, free_bits, warmup",
                 "data: mnist, fashion_mnist, idx, kmnist, mnist_binarized, npz",
                 "scheduler: constant, burda, cosine"):
        assert line in out.stdout


def test_help_describes_every_key_of_the_schema(tmp_path):
    from vaelab.config import key_help

    out = vaelab("--help", "loss=beta_vae", cwd=tmp_path)
    assert "loss: beta_vae, elbo, elbo_warmup, iwae" in out.stdout  # the option chosen first
    lines = out.stdout.splitlines()
    for key, about in key_help().items():
        assert about, f"{key} has no description in vaelab/config.py"
        [line] = [x for x in lines if x.strip().startswith(f"{key}=")]
        assert line.rstrip().endswith(about), line
    assert "Traceback" not in out.stderr


def test_shell_completion_alone_explains_itself_and_completes_when_installed(tmp_path):
    out = vaelab("--shell-completion", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert 'eval "$(vaelab -sc install=bash)"' in out.stderr
    install = vaelab("-sc", "install=bash", cwd=tmp_path)
    assert install.returncode == 0 and "complete -o nospace -o default -F hydra_bash_completion" in install.stdout
    query = vaelab("-sc", "query=bash", cwd=tmp_path, env={"COMP_LINE": "vaelab model.lat", "COMP_POINT": "16"})
    assert query.stdout.split() == ["model.latent_dim="]


def test_an_out_of_range_value_is_one_line_exit_2_and_no_run(tmp_path, mnist_root):
    args = [a for a in tiny_overrides(mnist_root) if a != "tracking=none"]
    out = vaelab(*args, "model.latent_dim=0", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == "vaelab: error: model.latent_dim must be >= 1, got 0"
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_a_misspelt_key_fails_before_anything_runs(tmp_path):
    out = vaelab("model.latnet_dim=3", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("vaelab: error: ") and len(out.stderr.strip().splitlines()) <= 5
    assert "latnet_dim" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_multirun_nests_each_job_under_one_parent_with_a_summary(tmp_path, mnist_root):
    args = [a for a in tiny_overrides(mnist_root) if a != "tracking=none"]
    out = vaelab("--multirun", *args, "model.latent_dim=2,3", "loss.beta=1,4", "tracking.log_model=false",
                 "trainer.images_every=0", "trainer.epochs=1", "data.limit=64", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("vaelab")
    runs = MlflowClient().search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.tags["hydra.job.num"] for c in children) == ["0", "1", "2", "3"]
    assert all(c.data.tags["hydra.sweep.dir"] == parent.data.tags["hydra.sweep.dir"] for c in children)
    assert {c.info.run_name for c in children} == {
        "z2 β1", "z2 β4", "z3 β1", "z3 β4"}  # the UI's runs table cuts names at ~12 characters
    assert children[0].data.params["optimizer"] == "adam" and children[0].data.params["model"] == "mlp"  # choices
    assert parent.info.run_name == "sweep latent_dim×beta (4)"
    assert parent.data.params["model.latent_dim"] == "2, 3" and parent.data.params["loss.beta"] == "1, 4"
    assert parent.data.params["trainer.epochs"] == "1" and parent.data.params["data.limit"] == "64"
    best = min(children, key=lambda c: c.data.metrics["test/loss"])
    assert parent.data.tags["vaelab.best_run_id"] == best.info.run_id
    for key in ("test/loss", "test/recon", "test/kl"):
        assert parent.data.metrics[f"best/{key}"] == best.data.metrics[key]
    table = MlflowClient().download_artifacts(parent.info.run_id, "sweep_summary.csv", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(table).read_text())))
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert [(r["latent_dim"], r["beta"]) for r in rows] == [("2", "1"), ("2", "4"), ("3", "1"), ("3", "4")]
    assert "test/iw_nll" not in rows[0] and len(rows[0]["test/loss"].split(".")[1]) == 2
    figures = {f.path for f in MlflowClient().list_artifacts(parent.info.run_id, "figures")}
    assert {"figures/rate_distortion.png", "figures/test_loss_per_config.png"} <= figures
    hydra_files = {f.path for f in MlflowClient().list_artifacts(children[0].info.run_id, "hydra")}
    assert {"hydra/config.yaml", "hydra/overrides.yaml"} <= hydra_files


def test_a_failing_job_closes_the_sweep_parent_as_failed(tmp_path, mnist_root):
    args = [a for a in tiny_overrides(mnist_root) if a != "tracking=none"]
    out = vaelab("--multirun", *args, "optimizer.lr=1e30", "trainer.epochs=3", "tracking.log_model=false",
                 "trainer.images_every=0", cwd=tmp_path)
    assert out.returncode != 0
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name("vaelab").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]  # the job and its parent


def test_an_installed_wheel_carries_its_configs(tmp_path, mnist_root):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("vaelab-*.whl"))
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    shipped = {p.relative_to(site / "vaelab" / "conf") for p in (site / "vaelab" / "conf").rglob("*.yaml")}
    in_repo = {p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml")}
    assert shipped == in_repo
    assert (site / "hydra_plugins" / "vaelab_stacked_launcher" / "stacked_launcher.py").is_file()  # hydra/launcher=stacked
    env = {"PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import vaelab; print(vaelab.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env})
    assert where.stdout.startswith(str(site))
    out = vaelab(*tiny_overrides(mnist_root), "experiment=pytorch_example", "trainer.epochs=1", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Total params: 652,824" in out.stdout


def test_the_console_script_is_the_same_app(tmp_path):
    script = Path(sys.executable).parent / "vaelab"
    out = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "== Config groups ==" in out.stdout


def test_progress_bars_go_to_a_terminal_only(tmp_path, mnist_root):
    """A redirected log got every frame of every bar (1,666 frames, 162 KB in one log): with
    `trainer.progress=true` and no terminal, it gets the epoch lines only."""
    args = [a for a in tiny_overrides(mnist_root) if not a.startswith(("trainer.progress=", "trainer.epochs="))]
    out = vaelab(*args, "trainer.progress=true", "trainer.epochs=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "epoch   2/2" in out.stdout
    assert "\r" not in out.stderr and "it/s" not in out.stderr, out.stderr[-500:]


def test_a_value_of_the_wrong_type_names_the_key_the_value_and_the_type(tmp_path):
    out = vaelab("model.latent_dim=abc", cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "model.latent_dim=abc" in out.stderr and "'abc'" in out.stderr and "Integer" in out.stderr


def test_an_unknown_option_lists_every_option_of_its_group(tmp_path):
    """The list was cut at five lines (three options of four), and the OSError catch for a full
    disk must not swallow it (Hydra's missing-config error is an IOError)."""
    out = vaelab("model=foo", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Could not find 'model/foo'" in out.stderr and "space" not in out.stderr
    options = {p.stem for p in (REPO / "conf" / "model").glob("*.yaml")}
    assert options <= {line.strip() for line in out.stderr.splitlines()}, out.stderr
    assert "search path" not in out.stderr


def test_evaluate_without_a_run_is_one_line_and_writes_nothing_where_it_is_started(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vaelab.evaluate"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "VAELAB_HOME": str(tmp_path / "home")})
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "vaelab.evaluate: error: which run? python -m vaelab.evaluate run_id=<run id> [k=5000]"], out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # its folders live in vaelab's home


def test_evaluate_help_lists_its_own_keys():
    """It was Hydra's stock page, listing the internal schema/* groups and no word on run_id."""
    out = subprocess.run([sys.executable, "-m", "vaelab.evaluate", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "schema/" not in out.stdout and "powered by Hydra" not in out.stdout
    for key in ("run_id=???", "k=5000", "batch_size=20", "device=auto", "data.root=", "tracking.uri=sqlite:///",
                "tracking.credentials=null"):
        assert f"  {key}" in out.stdout, (key, out.stdout)
