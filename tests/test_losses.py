import math

import pytest
import torch

from vaelab.losses import bernoulli_nll, elbo_terms, gaussian_kl, log_normal_diag, log_normal_std


def test_kl_is_zero_at_the_prior():
    mu, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    assert torch.allclose(gaussian_kl(mu, logvar), torch.zeros(4))


def test_kl_is_positive_away_from_the_prior():
    assert (gaussian_kl(torch.ones(2, 3), torch.full((2, 3), -1.0)) > 0).all()


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.tensor([[0.7, -1.2]]), torch.tensor([[-0.5, 0.3]])
    z = mu + torch.exp(0.5 * logvar) * torch.randn(200_000, 2)
    mc = (log_normal_diag(z, mu, logvar) - log_normal_std(z)).mean()
    assert gaussian_kl(mu, logvar).item() == pytest.approx(mc.item(), abs=0.01)


def test_bce_from_logits_matches_the_naive_formula():
    torch.manual_seed(0)
    logits, x = torch.randn(5, 784), torch.rand(5, 784)
    p = torch.sigmoid(logits)
    naive = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(dim=1)
    assert torch.allclose(bernoulli_nll(logits, x), naive, atol=1e-3)


def test_bce_from_logits_is_finite_where_the_naive_formula_is_not():
    logits, x = torch.tensor([[200.0, -200.0]]), torch.tensor([[0.0, 1.0]])
    nll = bernoulli_nll(logits, x)
    assert torch.isfinite(nll).all() and nll.item() == pytest.approx(400.0)


def test_elbo_terms_average_over_the_batch_and_weight_kl_by_beta():
    torch.manual_seed(0)
    logits, x = torch.randn(8, 784), torch.rand(8, 784)
    mu, logvar = torch.randn(8, 2), torch.randn(8, 2)
    terms = elbo_terms(logits, x, mu, logvar, beta=4.0)
    assert terms.recon.item() == pytest.approx(bernoulli_nll(logits, x).mean().item())
    assert terms.kl.item() == pytest.approx(gaussian_kl(mu, logvar).mean().item())
    assert terms.loss.item() == pytest.approx(terms.recon.item() + 4.0 * terms.kl.item(), rel=1e-6)


def test_log_normal_std_matches_torch_distributions():
    z = torch.randn(3, 4)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(log_normal_std(z), expected, atol=1e-5)
    assert math.isfinite(log_normal_diag(z, z * 0, z * 0).sum().item())
