"""Print the tables of docs/results.md section 6 (quality of the YAML-selected parts) and copy
its pictures into docs/images/, from one MLflow store or several (runs made on other machines).

    .venv/bin/python docs/quality_tables.py [--uri sqlite:///runs/mlflow.db] [--uri ...]

The runs are the ones of docs/reproduce_results.sh section 6, found by experiment name and the
option that varies; where a store holds several, the newest finished one counts.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
from mlflow import MlflowClient

IMAGES = Path(__file__).resolve().parent / "images"


class Stores:
    """The finished runs (not sweep parents) of every store given, newest first."""

    def __init__(self, uris: list[str]) -> None:
        self.runs = []
        for uri in uris:
            client = MlflowClient(uri)
            for exp in client.search_experiments():
                for run in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'",
                                              order_by=["attributes.start_time DESC"]):
                    if run.data.tags.get("sweep") != "parent":
                        self.runs.append((client, exp.name, run))

    def find(self, experiment: str, **params: str):
        for client, name, run in self.runs:
            if name == experiment and all(run.data.params.get(k) == v for k, v in params.items()):
                return client, run
        raise SystemExit(f"no finished run in experiment {experiment!r} with {params}")


def copy(found, artifact: str, name: str) -> None:
    client, run = found
    if artifact.startswith("images/"):  # the last step's picture of this key
        key = artifact.removeprefix("images/")
        paths = sorted((f.path for f in client.list_artifacts(run.info.run_id, "images")
                        if f.path.startswith(f"images/{key}+step+") and f.path.endswith(".png")),
                       key=lambda p: int(p.split("+step+")[1].split("+")[0]))
        artifact = paths[-1]
    shutil.copy(client.download_artifacts(run.info.run_id, artifact), IMAGES / name)


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def header(*cells: str) -> str:
    return row(*cells) + "\n" + row(*["---"] * len(cells))


def num(found, key: str, digits: int = 2) -> str:
    value = found[1].data.metrics.get(key)
    return "–" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", action="append", help="a tracking store (repeatable)")
    uris = parser.parse_args().uri or [f"sqlite:///{Path.cwd() / 'runs' / 'mlflow.db'}"]
    stores = Stores(uris)
    IMAGES.mkdir(exist_ok=True)

    print("## 6.1 convolutional vs MLP at z = 2\n")
    print(header("run", "model", "epochs", "test -ELBO", "recon", "KL", "probe acc"))
    for label, found in (("experiment=keras_conv", stores.find("keras_conv")),
                         ("experiment=keras_seed", stores.find("keras_seed")),
                         ("default MLP, z = 2", stores.find("probe", **{"model.latent_dim": "2"}))):
        print(row(label, found[1].data.params.get("model.name"), found[1].data.params["trainer.epochs"],
                  num(found, "test/loss"), num(found, "test/recon"), num(found, "test/kl"),
                  num(found, "test/probe_acc", 3)))
    conv = stores.find("keras_conv")
    copy(conv, "figures/latent_space.png", "keras_conv_latent_scatter.png")
    copy(conv, "figures/manifold.png", "keras_conv_manifold.png")

    print("\n## 6.2 likelihoods at z = 10\n")
    print(header("likelihood", "test -ELBO", "recon (−log p(x|z))", "KL", "active units", "probe acc"))
    for name in ("bernoulli", "continuous_bernoulli"):
        found = stores.find("likelihood", **{"likelihood.name": name})
        print(row(name, num(found, "test/loss"), num(found, "test/recon"), num(found, "test/kl"),
                  num(found, "test/active_units", 0), num(found, "test/probe_acc", 3)))
        copy(found, "images/samples", f"likelihood_{name}_samples.png")
        copy(found, "images/reconstructions", f"likelihood_{name}_reconstructions.png")

    print("\n## 6.3 KL schedules at z = 50\n")
    print(header("kl", "test -ELBO", "recon", "KL", "active units (of 50)", "probe acc"))
    for name in ("constant", "warmup", "cyclical", "capacity", "free_bits"):
        found = stores.find("kl_schedules", **{"kl.name": name})
        print(row(name, num(found, "test/loss"), num(found, "test/recon"), num(found, "test/kl"),
                  num(found, "test/active_units", 0), num(found, "test/probe_acc", 3)))
        if name in ("constant", "cyclical"):
            copy(found, "figures/kl_per_dimension.png", f"kl_schedules_{name}_kl_per_dimension.png")

    print("\n## 6.4 IWAE (k = 5) vs VAE, Burda et al.'s architecture and protocol\n")
    print(header("objective", "test -ELBO (k=1)", "IW-NLL (k=5000)", "KL", "active units", "epochs"))
    for name in ("elbo", "iwae"):
        found = stores.find("iwae_burda", **{"loss.name": name})
        print(row(name, num(found, "test/loss"), num(found, "test/iw_nll"), num(found, "test/kl"),
                  num(found, "test/active_units", 0), found[1].data.params["trainer.epochs"]))

    print("\n## 6.5 linear probe accuracy by latent size (default MLP, 30 epochs)\n")
    print(header("latent dim", "test -ELBO", "probe acc"))
    for dim, found in ((2, stores.find("probe", **{"model.latent_dim": "2"})),
                       (10, stores.find("likelihood", **{"likelihood.name": "bernoulli"})),
                       (20, stores.find("probe", **{"model.latent_dim": "20"})),
                       (50, stores.find("kl_schedules", **{"kl.name": "constant"}))):
        print(row(dim, num(found, "test/loss"), num(found, "test/probe_acc", 3)))


if __name__ == "__main__":
    main()
