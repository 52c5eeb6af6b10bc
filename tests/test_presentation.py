"""How runs and sweeps present themselves: names, descriptions, the sweep table. No MLflow store."""

from types import SimpleNamespace

import numpy as np
import torch

from vaelab.plots import (
    SCATTER_PASSES, figure_to_array, latent_scatter, manifold_figure, objective_per_config, rate_distortion,
)
from vaelab.sweeps import shared_params, short_keys, sweep_job_name, sweep_name, sweep_table, swept_keys
from vaelab.presentation import DEFAULT_UI, model_name, run_link, run_note, ui_base


def child(job, overrides, metrics, params=None, status="FINISHED"):
    return SimpleNamespace(
        info=SimpleNamespace(run_id=f"id{job}", run_name=f"run{job}", status=status),
        data=SimpleNamespace(tags={"hydra.job.num": str(job), "overrides": overrides}, metrics=metrics,
                             params=params or {}),
    )


def test_a_sweep_is_named_by_the_keys_it_varies_and_its_jobs_by_their_values():
    sweep = "data.root=/x model.latent_dim=2,10 loss.beta=1,4 trainer.epochs=3"
    assert swept_keys(sweep.split()) == ["model.latent_dim", "loss.beta"]
    assert sweep_name(["model.latent_dim", "loss.beta"], 4) == "sweep latent_dim×beta (4)"
    job = ["data.root=/x", "model.latent_dim=10", "loss.beta=4", "trainer.epochs=3"]
    assert sweep_job_name(sweep, job) == "z10 β4"  # the UI's runs table cuts names at ~12 characters
    assert sweep_job_name("trainer.epochs=3", job) is None  # nothing swept: the default name stays
    assert sweep_job_name("model=mlp,conv kl.free_bits=0.5,1", ["model=conv", "kl.free_bits=1"]) == "conv free_bits=1"
    assert short_keys(["model.beta", "loss.beta", "trainer.seed"]) == {
        "model.beta": "model.beta", "loss.beta": "loss.beta", "trainer.seed": "seed"}


def test_the_sweep_table_has_a_column_per_swept_key_readable_numbers_and_no_empty_metric():
    keys = ["model.latent_dim"]
    rows = [child(0, "model.latent_dim=2", {"test/loss": 151.2345678, "test/active_units": 2.0}),
            child(1, "model.latent_dim=10", {"test/loss": 140.0}, status="FAILED")]
    table = sweep_table(rows, keys).splitlines()
    assert table[0] == "job,run_name,latent_dim,status,test/loss,test/active_units,run_id"
    assert table[1] == "0,run0,2,FINISHED,151.23,2,id0"
    assert table[2] == "1,run1,10,FAILED,140,,id1"


def test_the_parent_shares_what_every_child_has_and_lists_the_swept_values():
    rows = [child(0, "model.latent_dim=2", {}, {"trainer.epochs": "3", "model.latent_dim": "2"}),
            child(1, "model.latent_dim=10", {}, {"trainer.epochs": "3", "model.latent_dim": "10"})]
    assert shared_params(rows, ["model.latent_dim"]) == {"trainer.epochs": "3", "model.latent_dim": "2, 10"}


def test_the_description_gives_the_command_and_the_final_results():
    note = run_note("vaelab model.latent_dim=10", {"test/loss": (151.234, 30, 0), "lr": (0.001, 30, 0)},
                    "FINISHED", None)
    assert "vaelab model.latent_dim=10" in note and "| test/loss | 151.23 |" in note and "(epoch 30;" in note and "lr" not in note
    assert "**KILLED**" in run_note("vaelab", {}, "KILLED", "KeyboardInterrupt")


def test_model_names_are_ones_mlflow_accepts_and_links_point_at_the_ui_that_serves_the_store():
    assert model_name("mlp-h256-z2-b1.0") == "vae-mlp-h256-z2-b1_0"
    assert model_name("latent_dim=2 beta=0.5") == "vae-latent_dim=2_beta=0_5"
    assert ui_base("sqlite:////x/mlflow.db") == DEFAULT_UI == "http://127.0.0.1:5000"
    assert ui_base("http://tracker:8080/") == "http://tracker:8080"
    assert ui_base("sqlite:////x/mlflow.db", "http://127.0.0.1:5001/") == "http://127.0.0.1:5001"
    assert run_link("http://h:1", "3", "abc") == "http://h:1/#/experiments/3/runs/abc"


def test_sweep_figures_are_points_not_a_line_through_job_order():
    figure = rate_distortion([1.0, 3.0, 2.0], [5.0, 4.0, 6.0], ["a", "b", "c"], title="sweep x (3)")
    ax = figure.axes[0]
    assert not ax.lines and len(ax.collections[0].get_offsets()) == 3
    assert "sweep x (3)" in ax.get_title()
    assert figure_to_array(objective_per_config([150.0, 140.0], ["a", "b"])).ndim == 3


def test_the_latent_scatter_is_shuffled_passes_over_the_classes_titled_with_run_and_epoch():
    z = torch.randn(1000, 2)
    figure = latent_scatter(z, torch.arange(1000) % 10, title="run · epoch 3")
    ax = figure.axes[0]
    drawn = [(line.get_color(), len(line.get_xdata())) for line in ax.lines]
    assert sum(n for _, n in drawn) == 1000 and not ax.collections
    colours = [c for c, _ in drawn]
    assert len(set(colours)) == 10 and len(colours) == 10 * SCATTER_PASSES  # each class in every pass
    assert colours[:10] == colours[10:20]  # class by class within a pass, pass after pass: no digit over all others
    assert all(abs(n - 1000 / 10 / SCATTER_PASSES) < 15 for _, n in drawn)  # shuffled: even shares
    every = np.concatenate([np.stack([line.get_xdata(), line.get_ydata()], 1) for line in ax.lines])
    assert sorted(map(tuple, every.tolist())) == sorted(map(tuple, z.numpy().astype(np.float32).tolist()))
    assert ax.get_title().startswith("run · epoch 3")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(d) for d in range(10)]


def test_the_latent_scatter_and_manifold_take_the_arrays_the_logging_process_gets():
    """The logging process draws from NumPy arrays (it never imports torch): the same pictures."""
    z, labels = torch.randn(100, 2), torch.arange(100) % 10
    from_tensors = figure_to_array(latent_scatter(z, labels, title="run"))
    assert (figure_to_array(latent_scatter(z.numpy(), labels.numpy(), title="run")) == from_tensors).all()
    manifold = manifold_figure(torch.rand(225, 784).numpy(), title="run · epoch 2")
    ticks = [t.get_text() for t in manifold.axes[0].get_xticklabels()]
    assert ticks[0] == "-1.6" and ticks[7] == "0.0" and ticks[-1] == "1.6"  # the plane's quantiles, no -0.0
