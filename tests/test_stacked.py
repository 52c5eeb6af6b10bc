"""`hydra/launcher=stacked`: a sweep's jobs of one shape trained together, each still its own run.

Which jobs share a stack; a stacked step against torch.optim member by member; and, driving the
real command line over the fixture data and reading the store back, every member's per-epoch
metrics equal to the basic launcher's in any member order. (Faults, and a sweep that skips what
finished: test_stacked_faults.py.)
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_config
from tests.survival_helpers import (  # noqa: F401 - fixtures are found by name
    base_args, experiment, histories, runs_of, store, vaelab,
)
from vaelab.losses import gaussian_kl_per_dim
from vaelab.metrics import evaluate_elbo
from vaelab.models import MLPVAE
from vaelab.objectives import ELBO
from vaelab.stacked import Stack, group_jobs, stack_key

STACKED = "hydra/launcher=stacked"


def test_jobs_that_differ_only_in_what_a_member_may_set_share_a_stack():
    base = compose_config()
    free = compose_config("trainer.seed=3", "loss.beta=4", "kl=warmup", "optimizer=sgd", "optimizer.lr=0.1",
                          "scheduler=cosine", "tracking.run_name=x")
    assert stack_key(base)[0] is not None and stack_key(base)[0] == stack_key(free)[0]
    for other in ("model.latent_dim=3", "trainer.epochs=2", "trainer.batch_size=64", "likelihood=gaussian",
                  "data=fashion_mnist", "trainer.precision=bf16"):
        assert stack_key(compose_config(other))[0] != stack_key(base)[0], other
    key, why = stack_key(compose_config("loss=iwae"))
    assert key is None and "k samples" in why
    configs = [compose_config(f"model.latent_dim={z}", f"trainer.seed={s}") for z in (2, 3) for s in (0, 1, 2)]
    assert group_jobs(configs, max_members=2) == [([0, 1], ""), ([2], "no other job has its shapes"),
                                                  ([3, 4], ""), ([5], "no other job has its shapes")]


def test_a_stacked_step_trains_each_member_as_torch_optim_alone():
    """Three members with their own optimizers (Adam at two rates, SGD with momentum), noise and
    batches: three stacked steps leave each member's parameters where training it alone does."""
    torch.manual_seed(0)
    models = [MLPVAE(input_dim=784, hidden_dim=32, latent_dim=2) for _ in range(3)]
    alone = copy.deepcopy(models)
    make = [lambda p: torch.optim.Adam(p, lr=1e-3), lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.8, 0.9)),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)]
    stacked_opts = [f(m.parameters()) for f, m in zip(make, models)]
    alone_opts = [f(m.parameters()) for f, m in zip(make, alone)]
    objectives = [ELBO(beta=b) for b in (1.0, 4.0, 0.5)]
    stack = Stack(models)
    for step in range(1, 4):
        x, eps = torch.rand(3, 16, 784), torch.randn(3, 16, 2)
        for k, (model, opt) in enumerate(zip(alone, alone_opts)):
            out = model(x[k], eps[k])
            terms = objectives[k].combine(model.likelihood.nll(out.logits, x[k]).mean(),
                                          gaussian_kl_per_dim(out.mu, out.logvar), step)
            opt.zero_grad()
            terms.loss.backward()
            opt.step()
        recon, kl_dims = stack.terms(x, eps)
        stack.backward(sum(objectives[k].combine(recon[k], kl_dims[k], step).loss for k in range(3)))
        for opt in stacked_opts:
            opt.step()
    for got, want in zip(models, alone):
        for (name, p), q in zip(got.named_parameters(), want.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert models[0].encoder.z_mean.weight.data_ptr() != models[1].encoder.z_mean.weight.data_ptr()



def test_a_stacked_test_pass_gives_each_member_its_own_test_elbo_and_means():
    """One stacked pass over a shared test batch, each member's noise from its own stream: the
    terms and posterior means `evaluate_elbo` gives each member alone, drawing from that stream."""
    torch.manual_seed(0)
    models = [MLPVAE(input_dim=784, hidden_dim=32, latent_dim=2) for _ in range(3)]
    x = torch.rand(50, 784)
    eps = torch.stack([torch.randn(50, 2, generator=torch.Generator().manual_seed(k)) for k in range(3)])
    recon, kl_dims, mu = Stack(models).evaluate(x, eps)
    assert not recon.requires_grad and mu.shape == (3, 50, 2)
    for k, model in enumerate(models):
        torch.manual_seed(k)  # evaluate_elbo's noise: randn_like(mu) from the global stream
        want, means = evaluate_elbo(model, x, batch_size=50)
        got = ELBO().combine(recon[k], kl_dims[k], 1)
        for name, value in zip(("loss", "recon", "kl"), got):
            assert math.isclose(value.item(), want[name], rel_tol=1e-5), name
        torch.testing.assert_close(mu[k], means)


CURVES = ("test/loss", "test/recon", "test/kl", "train/loss", "beta", "lr")


def curves_by_name(home: Path, experiment: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    runs = [r for r in runs_of(home, experiment) if r.data.tags.get("sweep") != "parent"]
    return {r.info.run_name: {k: v for k, v in histories(home, r.info.run_id).items() if k in CURVES} for r in runs}


def assert_close_curves(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        for key in CURVES:
            steps = [s for s, _ in want[name][key]]
            assert [s for s, _ in got[name][key]] == steps, (name, key)
            for (_, a), (_, b) in zip(got[name][key], want[name][key]):
                assert math.isclose(a, b, rel_tol=1e-3), (name, key, a, b)


@pytest.mark.slow
def test_a_stacked_sweep_equals_the_basic_launcher_in_any_order(tmp_path, mnist_root, store, experiment):
    sweep = ("trainer.epochs=2", "loss.beta=1,4", "trainer.seed=0,1", "optimizer.lr=0.002")
    basic = vaelab("--multirun", *base_args(mnist_root, store, *sweep, experiment=f"{experiment}_basic"),
                   home=tmp_path / "home")
    assert basic.returncode == 0, basic.stderr[-3000:]
    stacked = vaelab("--multirun", STACKED, *base_args(mnist_root, store, *sweep, experiment=experiment),
                     home=tmp_path / "home")
    assert stacked.returncode == 0, stacked.stderr[-3000:]
    assert "stacked launcher: jobs 0, 1, 2, 3 train together" in stacked.stdout
    want = curves_by_name(store, f"{experiment}_basic")
    assert len(want) == 4
    assert_close_curves(curves_by_name(store, experiment), want)

    reversed_order = ("trainer.epochs=2", "loss.beta=4,1", "trainer.seed=1,0", "optimizer.lr=0.002")
    again = vaelab("--multirun", STACKED, *base_args(mnist_root, store, *reversed_order,
                                                      experiment=f"{experiment}_reversed"), home=tmp_path / "home")
    assert again.returncode == 0, again.stderr[-3000:]
    assert_close_curves(curves_by_name(store, f"{experiment}_reversed"), want)


def test_plan_shows_the_stacks_the_launcher_would_train(mnist_root, capsys):
    from vaelab.plan import main

    assert main(["hydra/launcher=stacked", "trainer.seed=0,1", "loss=elbo,iwae", f"data.root={mnist_root}",
                 "data.verify=false", "tracking=none"]) == 0
    out = capsys.readouterr().out
    assert "stacked launcher: jobs 0, 2 train together" in out
    assert "stacked launcher: job 1 alone (loss=iwae trains k samples apart)" in out


@pytest.mark.slow
def test_an_optuna_study_trains_each_batch_of_trials_as_a_stack(tmp_path, mnist_root):
    """Optuna's sweeper hands the launcher `n_jobs` trials at a time: each batch is one stack, and
    the study reads each member's test loss."""
    args = ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "loss.beta=interval(0.5,4)",
            f"data.root={mnist_root}", "data.verify=false", "trainer.epochs=1", "trainer.batch_size=32",
            "trainer.progress=false", "tracking=none"]
    study = vaelab("--multirun", STACKED, *args, home=tmp_path / "home")
    assert study.returncode == 0, study.stderr[-3000:]
    assert "stacked launcher: jobs 0, 1 train together" in study.stdout
    assert "stacked launcher: jobs 2, 3 train together" in study.stdout
    assert "Best value: " in study.stdout + study.stderr and "sweep of 4 jobs: 4 finished" in study.stdout
