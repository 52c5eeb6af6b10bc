"""Comparing runs where MLflow's UI stops: the sweep report logged to a sweep's parent (and written
into its folder), `vaelab compare` in the terminal and as a page, mean ± spread over seeds."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.conftest import tiny_overrides
from vaelab.report import RunView, compare_text, differing, report_html, seed_groups

pytestmark = pytest.mark.slow


def view(name, seed, dim, loss, status="FINISHED"):
    params = {"trainer.seed": str(seed), "model.latent_dim": str(dim), "model._target_": "vaelab.models.MLPVAE",
              "data.md5.x": "abc" if seed else "abd", "loss.beta": "1.0"}
    return RunView(f"id{name}", name, status, "e", params, {"test/loss": loss} if status == "FINISHED" else {},
                   error="DivergenceError: <nan>" if status != "FINISHED" else "")


def test_only_differing_keys_and_the_spread_over_seeds():
    runs = [view("a", 0, 2, 100.0), view("b", 1, 2, 102.0), view("c", 0, 8, 90.0), view("d", 1, 8, 0, "FAILED")]
    assert differing(runs) == ["model.latent_dim", "trainer.seed"]  # not the digest, not loss.beta
    groups = seed_groups(runs)
    assert [g.values for g in groups] == [{"model.latent_dim": "8"}, {"model.latent_dim": "2"}]
    assert groups[1].stats("test/loss") == (101.0, pytest.approx(1.4142, abs=1e-4), 2)
    assert groups[0].stats("test/loss") == (90.0, 0.0, 1)  # the failed seed is not averaged
    text = compare_text(runs)
    assert text.splitlines()[2].startswith("c ") and text.splitlines()[5].startswith("d ")  # best first, failed last
    assert "101.00 ± 1.41 (n=2)" in text
    page = report_html(runs, "t<1>")
    assert "<h1>t&lt;1&gt;</h1>" in page and "DivergenceError: &lt;nan&gt;" in page


def test_a_sweeps_report_and_compare(mnist_root, tmp_path):
    """MLflow's image grid stops at 10 runs and has no mean over seeds: the report shows every
    job's pictures and, for a sweep over seeds, the mean ± standard deviation per configuration."""
    home = tmp_path / "home"
    env = {**os.environ, "VAELAB_HOME": str(home)}
    args = [a for a in tiny_overrides(mnist_root) if a not in ("tracking=none", "trainer.epochs=1")]
    sweep = subprocess.run([sys.executable, "-m", "vaelab", "--multirun", *args, "trainer.epochs=2",
                            "model.latent_dim=2,3", "trainer.seed=0,1"], cwd=tmp_path, capture_output=True, text=True,
                           env=env, timeout=600)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vaelab").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r is not parent]
    page = (next(home.glob("multirun/*/*/sweep_report.html"))).read_text()
    assert {f.path for f in client.list_artifacts(parent.info.run_id)} >= {"sweep_report.html", "sweep_summary.csv"}
    for key in ("reconstructions", "samples", "latent_space", "manifold"):
        shown = re.findall(rf"<img alt='{key} of ([^']+)' src='data:image/png;base64,", page)
        expected = 4 if key != "manifold" else 2  # the manifold is drawn for 2-D latents
        assert len(shown) == expected, (key, shown)
    assert "Mean ± standard deviation over seeds" in page and page.count("(n=2)") >= 2
    table = client.download_artifacts(parent.info.run_id, "sweep_summary.csv", str(tmp_path))
    rows = list(csv.DictReader(open(table)))
    assert {r["seeds"] for r in rows} == {"2"} and all(r["test/loss mean"] for r in rows)

    out = subprocess.run([sys.executable, "-m", "vaelab", "compare", parent.info.run_id, "--html",
                          str(tmp_path / "cmp.html")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["run", "status", "model.latent_dim", "trainer.seed"]
    assert len([line for line in lines if "FINISHED" in line]) == 4
    assert "mean ± standard deviation over seeds" in out.stdout
    assert (tmp_path / "cmp.html").read_text().count("<figure>") == 14
    two = [c.info.run_id for c in children[:2]]
    some = subprocess.run([sys.executable, "-m", "vaelab", "compare", *two], capture_output=True, text=True,
                          env=env, timeout=300)
    assert some.returncode == 0 and len([x for x in some.stdout.splitlines() if "FINISHED" in x]) == 2
    bad = subprocess.run([sys.executable, "-m", "vaelab", "compare", "nope"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip() == "vaelab compare: error: no run nope in the store"


def test_compare_and_reproduce_on_an_unreachable_store_are_one_line(tmp_path):
    """They were MLflow's traceback (and its logged exception) on the console."""
    from vaelab.services.process import free_port

    env = {**os.environ, "VAELAB_HOME": str(tmp_path / "home")}
    uri = f"http://127.0.0.1:{free_port()}"
    for command in (["compare", "abc"], ["reproduce", "abc"]):
        out = subprocess.run([sys.executable, "-m", "vaelab", *command, "--store", uri], capture_output=True,
                             text=True, env=env, timeout=120)
        assert out.returncode == 2 and out.stderr.strip().splitlines() == [
            f"vaelab {command[0]}: error: the tracking store {uri} cannot be reached or written: Connection refused; "
            "check tracking.uri"], out.stderr
