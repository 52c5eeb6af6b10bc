"""Print the tables of docs/results.md from the MLflow store that docs/reproduce_results.sh fills,
and copy the figures it shows into docs/images/.

    .venv/bin/python docs/results_tables.py [--uri sqlite:///runs/mlflow.db]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
import mlflow
from mlflow import MlflowClient

IMAGES = Path(__file__).resolve().parent / "images"


def latest_sweep(exp_name: str) -> list:
    """Children of the newest finished sweep parent in the experiment, by job number."""
    exp = mlflow.get_experiment_by_name(exp_name)
    client = MlflowClient()
    parents = client.search_runs([exp.experiment_id], "tags.sweep = 'parent' and attributes.status = 'FINISHED'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    parent = parents[0]
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return parent, sorted(children, key=lambda r: int(r.data.tags["hydra.job.num"]))


def latest_run(exp_name: str):
    exp = mlflow.get_experiment_by_name(exp_name)
    return MlflowClient().search_runs([exp.experiment_id], "attributes.status = 'FINISHED'",
                                      order_by=["attributes.start_time DESC"], max_results=1)[0]


def fetch(run, artifact: str, name: str) -> None:
    local = MlflowClient().download_artifacts(run.info.run_id, artifact)
    shutil.copy(local, IMAGES / name)


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def fmt(metrics: dict, key: str) -> str:
    return f"{metrics[key]:.2f}" if key in metrics else "–"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", default=f"sqlite:///{Path.cwd() / 'runs' / 'mlflow.db'}")
    mlflow.set_tracking_uri(parser.parse_args().uri)
    IMAGES.mkdir(exist_ok=True)

    _, runs = latest_sweep("pytorch_example")
    losses = [r.data.metrics["test/loss"] for r in runs]
    print("## 1. pytorch_example\n")
    print(row("seed", "test -ELBO", "recon", "KL", "s/epoch"))
    print(row(*["---"] * 5))
    for r in runs:
        m = r.data.metrics
        print(row(r.data.params["trainer.seed"], fmt(m, "test/loss"), fmt(m, "test/recon"), fmt(m, "test/kl"), fmt(m, "time/epoch_s")))
    print(f"\nmean ± sd: {statistics.mean(losses):.2f} ± {statistics.stdev(losses):.2f}\n")

    run = latest_run("keras_seed")
    m = run.data.metrics
    print("## 2. keras_seed\n")
    print(row("test -ELBO", "recon", "KL", "run"))
    print(row(*["---"] * 4))
    print(row(fmt(m, "test/loss"), fmt(m, "test/recon"), fmt(m, "test/kl"), run.info.run_id))
    fetch(run, "figures/latent_space.png", "keras_seed_latent_scatter.png")
    fetch(run, "figures/manifold.png", "keras_seed_manifold.png")
    last = int(run.data.params["trainer.epochs"])
    for key in ("reconstructions", "samples"):
        stepped = [f.path for f in MlflowClient().list_artifacts(run.info.run_id, "images")
                   if f.path.startswith(f"images/{key}+step+{last}+") and f.path.endswith(".png")
                   and "compressed" not in f.path]
        fetch(run, stepped[0], f"keras_seed_{key}.png")

    print("\n## 3. latent sweep\n")
    _, runs = latest_sweep("latent_sweep")
    print(row("latent dim", "test -ELBO", "recon", "KL", "active units", "IW-NLL (k=1000)"))
    print(row(*["---"] * 6))
    for r in runs:
        m = r.data.metrics
        print(row(r.data.params["model.latent_dim"], fmt(m, "test/loss"), fmt(m, "test/recon"), fmt(m, "test/kl"),
                  int(m["test/active_units"]), fmt(m, "test/iw_nll")))

    print("\n## 4. beta sweep\n")
    parent, runs = latest_sweep("beta_sweep")
    print(row("beta", "test -ELBO", "recon (distortion)", "KL (rate)", "active units"))
    print(row(*["---"] * 5))
    for r in runs:
        m = r.data.metrics
        print(row(r.data.params["loss.beta"], fmt(m, "test/loss"), fmt(m, "test/recon"), fmt(m, "test/kl"),
                  int(m["test/active_units"])))
    fetch(parent, "images/rate_distortion.png", "beta_sweep_rate_distortion.png")

    print("\n## 5. iwae_burda\n")
    run = latest_run("iwae_burda")
    m = run.data.metrics
    print(row("test -ELBO (k=1)", "IW-NLL (k=5000)", "recon", "KL", "active units", "epochs", "s/epoch"))
    print(row(*["---"] * 7))
    print(row(fmt(m, "test/loss"), fmt(m, "test/iw_nll"), fmt(m, "test/recon"), fmt(m, "test/kl"),
              int(m["test/active_units"]), run.data.params["trainer.epochs"], fmt(m, "time/epoch_s")))


if __name__ == "__main__":
    main()
