"""The per-batch objectives: the ELBO with its schedule, and the IWAE bound."""

import math

import pytest
import torch

from vaelab.errors import ConfigError
from vaelab.kl_schedules import Capacity, Constant, Warmup
from vaelab.likelihoods import Gaussian
from vaelab.losses import bernoulli_nll, gaussian_kl, log_normal_diag, log_normal_std
from vaelab.metrics import iw_log_likelihood
from vaelab.models import MLPVAE
from vaelab.objectives import ELBO, IWAE

KW = {"steps_per_epoch": 10, "total_steps": 100}


def model_and_batch(**kwargs):
    torch.manual_seed(0)
    return MLPVAE(hidden_dim=16, latent_dim=3, **kwargs), torch.bernoulli(torch.rand(8, 784))


def test_elbo_is_recon_plus_scheduled_kl():
    model, x = model_and_batch()
    torch.manual_seed(1)
    terms = ELBO(Warmup(epochs=5, **KW), beta=2.0)(model, x, step=25)
    torch.manual_seed(1)
    out = model(x)
    recon, kl = bernoulli_nll(out.logits, x).mean(), gaussian_kl(out.mu, out.logvar).mean()
    assert terms.recon.item() == pytest.approx(recon.item())
    assert terms.kl.item() == pytest.approx(kl.item())
    assert terms.loss.item() == pytest.approx(recon.item() + 1.0 * kl.item(), rel=1e-6)  # beta 2 * 25/50


def test_elbo_uses_the_models_likelihood():
    model, x = model_and_batch(likelihood=Gaussian(sigma=0.5))
    torch.manual_seed(1)
    terms = ELBO(Constant(**KW))(model, x, step=1)
    torch.manual_seed(1)
    out = model(x)
    expected = torch.distributions.Normal(out.logits, 0.5).log_prob(x).sum(-1).mean()
    assert terms.recon.item() == pytest.approx(-expected.item(), rel=1e-5)


def test_iwae_with_one_sample_is_the_single_sample_elbo():
    """k = 1: log p(x|z) + log p(z) - log q(z|x) at one draw, the ELBO with a sampled KL."""
    model, x = model_and_batch()
    torch.manual_seed(1)
    iwae = IWAE(Constant(**KW), k=1)(model, x, step=1)
    torch.manual_seed(1)
    out = model(x)
    sampled_kl = log_normal_diag(out.z, out.mu, out.logvar) - log_normal_std(out.z)  # (B,)
    assert iwae.recon.item() == pytest.approx(bernoulli_nll(out.logits, x).mean().item(), rel=1e-6)
    assert iwae.loss.item() == pytest.approx((bernoulli_nll(out.logits, x) + sampled_kl).mean().item(), rel=1e-5)


def test_iwae_objective_is_the_iw_bound_of_evaluation():
    """The training bound with k samples is the evaluation bound with the same draws."""
    model, x = model_and_batch()
    torch.manual_seed(1)
    loss = IWAE(Constant(**KW), k=7)(model, x, step=1).loss
    torch.manual_seed(1)
    bound = iw_log_likelihood(model.train(), x, k=7)
    assert loss.item() == pytest.approx(-bound.mean().item(), rel=1e-5)


def test_iwae_bound_tightens_with_k():
    model, x = model_and_batch()
    torch.manual_seed(2)
    k1 = sum(IWAE(k=1)(model, x, 1).loss.item() for _ in range(20))
    k50 = sum(IWAE(k=50)(model, x, 1).loss.item() for _ in range(20))
    assert k50 < k1 and math.isfinite(k50)


def test_iwae_refuses_schedules_that_are_not_a_weight():
    with pytest.raises(ConfigError, match="loss=iwae"):
        IWAE(Capacity(**KW))
    with pytest.raises(ConfigError, match="loss.k must be >= 1"):
        IWAE(k=0)


def test_a_resumed_run_reproduces_a_cyclical_schedule_bit_for_bit(mnist_root):
    """The schedule is a function of the global step, so resuming after epoch 1 changes nothing."""
    from vaelab.data import load_mnist, raw_dir
    from vaelab.kl_schedules import Cyclical
    from vaelab.train import fit

    data = load_mnist(raw_dir(mnist_root), torch.device("cpu"))

    def train(epochs, resume=None, kept=None):
        torch.manual_seed(0)
        model = MLPVAE(hidden_dim=16, latent_dim=2)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        objective = ELBO(Cyclical(cycles=3, ratio=0.5, steps_per_epoch=7, total_steps=21))
        save = (lambda s: kept.update({s.epoch: s.state_dict(run_id="r", identity="i")})) if kept is not None else None
        return fit(model, opt, data, epochs=epochs, batch_size=32, eval_batch_size=100, objective=objective, seed=1,
                   progress=False, resume=resume, on_checkpoint=save)

    whole = train(3)
    kept: dict = {}
    train(1, kept=kept)
    resumed = train(3, resume=kept[1])
    assert {k: v for k, v in resumed.items() if not k.startswith("time/")} == \
        {k: v for k, v in whole.items() if not k.startswith("time/")}
    assert whole["beta"] == 1.0
